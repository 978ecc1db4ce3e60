// Draws every plotly figure on the page: an element with data-plotly="<id of a JSON script>".
// Figures are built on the server (pure chart builders); this file only hands them to plotly.js.
function sluiceDrawCharts(root) {
  root.querySelectorAll("[data-plotly]").forEach((el) => {
    const source = document.getElementById(el.dataset.plotly);
    if (!source) return;
    const figure = JSON.parse(source.textContent);
    Plotly.react(el, figure.data, figure.layout, { displayModeBar: false, responsive: true });
  });
}
document.addEventListener("DOMContentLoaded", () => sluiceDrawCharts(document));
document.addEventListener("htmx:afterSettle", (event) => sluiceDrawCharts(event.target));
