/* The usage page: draws the tokens-by-day chart as an inline SVG.
 *
 * The data comes from the page (json_script "usage-chart-data"): the days,
 * oldest first, and per model one token count per day. Bars stack the
 * models of a day; the table below the chart holds the same figures.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 720;
  var HEIGHT = 240;
  var MARGIN = { top: 12, right: 8, bottom: 28, left: 56 };
  var COLOURS = ["#2454a6", "#d9822b", "#2f9e6e", "#a23b72", "#6b7280", "#c2a91f"];
  var LABEL_EVERY_DAYS = 7;

  function svgEl(tag, attributes, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function dayTotals(data) {
    return data.days.map(function (_day, index) {
      return data.series.reduce(function (sum, line) {
        return sum + line.tokens[index];
      }, 0);
    });
  }

  function drawBars(svg, data, scale, slot) {
    var plotBottom = HEIGHT - MARGIN.bottom;
    data.days.forEach(function (day, index) {
      var stackTop = plotBottom;
      data.series.forEach(function (line, lineIndex) {
        var tokens = line.tokens[index];
        if (!tokens) return;
        var height = tokens * scale;
        stackTop -= height;
        var bar = svgEl("rect", {
          x: MARGIN.left + index * slot + slot * 0.1,
          y: stackTop,
          width: slot * 0.8,
          height: Math.max(height, 1),
          fill: COLOURS[lineIndex % COLOURS.length],
        });
        bar.append(svgEl("title", {}, day + " · " + line.model + " · " + tokens));
        svg.append(bar);
      });
    });
  }

  function drawAxes(svg, data, maximum, slot) {
    var plotBottom = HEIGHT - MARGIN.bottom;
    svg.append(svgEl("line", {
      x1: MARGIN.left, y1: plotBottom, x2: WIDTH - MARGIN.right, y2: plotBottom,
      class: "axis",
    }));
    [0, maximum / 2, maximum].forEach(function (value) {
      var y = plotBottom - (value / maximum) * (plotBottom - MARGIN.top);
      svg.append(svgEl("text", { x: MARGIN.left - 6, y: y + 4, class: "tick", "text-anchor": "end" },
        Math.round(value).toLocaleString()));
    });
    // Every seventh day back from today, so that today is always labelled.
    data.days.forEach(function (day, index) {
      if ((data.days.length - 1 - index) % LABEL_EVERY_DAYS !== 0) return;
      svg.append(svgEl("text", {
        x: MARGIN.left + index * slot + slot / 2, y: HEIGHT - 8,
        class: "tick", "text-anchor": "middle",
      }, day.slice(5)));
    });
  }

  function drawLegend(figure, data) {
    var legend = document.createElement("figcaption");
    legend.className = "usage-legend";
    data.series.forEach(function (line, lineIndex) {
      var item = document.createElement("span");
      var swatch = document.createElement("i");
      swatch.style.background = COLOURS[lineIndex % COLOURS.length];
      item.append(swatch, document.createTextNode(line.model));
      legend.append(item);
    });
    figure.append(legend);
  }

  function draw(figure, data) {
    var maximum = Math.max.apply(null, dayTotals(data).concat([1]));
    var slot = (WIDTH - MARGIN.left - MARGIN.right) / data.days.length;
    var scale = (HEIGHT - MARGIN.top - MARGIN.bottom) / maximum;
    var svg = svgEl("svg", {
      viewBox: "0 0 " + WIDTH + " " + HEIGHT,
      role: "img",
      "aria-label": figure.dataset.label || "",
    });

    drawAxes(svg, data, maximum, slot);
    drawBars(svg, data, scale, slot);
    figure.append(svg);
    drawLegend(figure, data);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var figure = document.querySelector("[data-usage-chart]");
    var source = document.getElementById("usage-chart-data");
    if (!figure || !source) return;
    draw(figure, JSON.parse(source.textContent));
  });
})();
