"""Post-hoc OOD detectors on cached network outputs (higher score = more in-distribution)."""
