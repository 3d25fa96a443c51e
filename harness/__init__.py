"""dfb-ood's application layer: data, training, masks, outputs, metrics, leaderboards, CLI.

OpenMP threads that finish early spin while they wait for the others. On a small shared machine
(two cores here) that busy-waiting competes with the threads still computing and slowed CPU
training by up to 10x in our measurements, so the harness asks for sleeping waits unless the user
chose otherwise. It must be set before torch loads its OpenMP runtime, hence here.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
