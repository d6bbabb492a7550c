// Draws the usage dashboard's charts from the series the page embeds (json_script).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("dashboard-series").textContent);
  const charts = [
    ["chart-requests", "requests", "bar", "#417690"],
    ["chart-errors", "errors", "bar", "#ba2121"],
    ["chart-p95", "p95_latency_ms", "line", "#c77700"],
    ["chart-images", "images", "bar", "#2a7a3b"],
    ["chart-cost", "cost_usd", "line", "#6a4c93"],
  ];
  for (const [id, key, type, color] of charts) {
    new Chart(document.getElementById(id), {
      type: type,
      data: {
        labels: data.labels,
        datasets: [{ label: key, data: data[key], backgroundColor: color, borderColor: color, spanGaps: true }],
      },
      options: { animation: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
  }
})();
