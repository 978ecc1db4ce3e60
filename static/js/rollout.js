// The rollout page polls its live region (status, guard table and the chart figures) with htmx;
// the charts sit outside that region, so after each poll they are redrawn in place with
// Plotly.react from the new figures rather than replaced, as the dashboards update.
document.addEventListener("htmx:afterSettle", () => {
  const charts = document.getElementById("rollout-charts");
  if (charts && document.getElementById("live")) sluiceDrawCharts(charts);
});
