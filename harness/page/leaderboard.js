// The leaderboard page's behaviour: sort by any column, show or hide the near/far columns, filter
// rows by detector family and by DFB variant. Every number comes from the JSON embedded in the
// page; the table cells were rendered with it, so sorting only moves whole rows. Nothing here
// builds HTML from data (no innerHTML): text cannot turn into markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  var main = document.getElementById("leaderboard");
  var tables = Array.prototype.slice.call(document.querySelectorAll("table.leaderboard"));
  var familySelect = document.getElementById("family");
  var variantBoxes = Array.prototype.slice.call(document.querySelectorAll("input[name=variant]"));
  var groupBoxes = Array.prototype.slice.call(document.querySelectorAll("input[name=ood-group]"));
  var status = document.getElementById("status");

  function rowData(table, tr) {
    return data.blocks[Number(table.dataset.block)].rows[Number(tr.dataset.row)];
  }

  // A sort key: [missing, value]; missing values go last whatever the direction.
  function key(row, column) {
    var spec = data.columns[column];
    if (spec.kind === "text") {
      return [false, String(row[column] || "")];
    }
    var cell = row.cells[column];
    return cell === null || cell === undefined ? [true, 0] : [false, cell.shown];
  }

  // First click: best first (higher-is-better columns descending, FPR ascending; text A to Z).
  // Second click: the reverse. Ties keep the input order in both directions.
  function ascendingFirst(column) {
    var spec = data.columns[column];
    return spec.kind === "text" || spec.higher === false;
  }

  function sortTable(table, column, reverse) {
    var ascending = ascendingFirst(column) !== reverse;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ka = key(rowData(table, a), column);
      var kb = key(rowData(table, b), column);
      if (ka[0] !== kb[0]) {
        return ka[0] ? 1 : -1;
      }
      var order = 0;
      if (typeof ka[1] === "string") {
        order = ka[1] < kb[1] ? -1 : ka[1] > kb[1] ? 1 : 0;
      } else {
        order = ka[1] - kb[1];
      }
      if (!ascending) {
        order = -order;
      }
      return order || Number(a.dataset.row) - Number(b.dataset.row);
    });
    rows.forEach(function (tr) {
      body.appendChild(tr);
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.dataset.column === column) {
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
    table.dataset.sortColumn = column;
    table.dataset.sortReverse = reverse ? "1" : "0";
  }

  function resetOrder(table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      return Number(a.dataset.row) - Number(b.dataset.row);
    });
    rows.forEach(function (tr) {
      body.appendChild(tr);
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.removeAttribute("aria-sort");
    });
    delete table.dataset.sortColumn;
    delete table.dataset.sortReverse;
  }

  function onHeaderClick(table, column) {
    var again = table.dataset.sortColumn === column && table.dataset.sortReverse === "0";
    sortTable(table, column, again);
  }

  function familyMatches(row, family) {
    if (!family) {
      return true;
    }
    var colon = family.indexOf(":");
    var kind = family.slice(0, colon);
    var value = family.slice(colon + 1);
    return kind === "base" ? row.base === value : row.group === value;
  }

  function applyFilters() {
    var family = familySelect ? familySelect.value : "";
    var variants = {};
    variantBoxes.forEach(function (box) {
      variants[box.value] = box.checked;
    });
    var shown = 0;
    var total = 0;
    tables.forEach(function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
        var row = rowData(table, tr);
        var visible = familyMatches(row, family) && variants[row.variant] !== false;
        tr.hidden = !visible;
        total += 1;
        shown += visible ? 1 : 0;
      });
    });
    groupBoxes.forEach(function (box) {
      main.classList.toggle("hide-" + box.value, !box.checked);
    });
    if (status) {
      status.textContent = "Showing " + shown + " of " + total + " rows";
    }
  }

  tables.forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var button = th.querySelector("button");
      if (button && th.dataset.column) {
        button.addEventListener("click", function () {
          onHeaderClick(table, th.dataset.column);
        });
      }
    });
    if (data.sort && data.sort.column) {
      sortTable(table, data.sort.column, false);
    }
  });
  if (familySelect) {
    familySelect.addEventListener("change", applyFilters);
  }
  variantBoxes.concat(groupBoxes).forEach(function (box) {
    box.addEventListener("change", applyFilters);
  });
  var reset = document.getElementById("reset");
  if (reset) {
    reset.addEventListener("click", function () {
      if (familySelect) {
        familySelect.value = "";
      }
      variantBoxes.concat(groupBoxes).forEach(function (box) {
        box.checked = true;
      });
      tables.forEach(function (table) {
        if (data.sort && data.sort.column) {
          sortTable(table, data.sort.column, false);
        } else {
          resetOrder(table);
        }
      });
      applyFilters();
    });
  }
  main.classList.add("js");
  applyFilters();
})();
