// A plotly chart that updates in place (the chart element of every page; see dgm/ui/plotly_live.py).
// Each new figure goes to Plotly.react, which redraws only what changed; dense traces are drawn on a
// canvas laid over the plot instead of as SVG.
// plotly.js, served by the app: plotly's cartesian partial bundle, or the plotly package's full one (dgm/ui/plotlyjs.py)
const SRC = "_stcore/bidi-components/dgm.plotlyjs/plotly.min.js";
const CLASS = "dgm-plot";  // the chart's container (screenshot tests select it)

function loadPlotly() {
  // one <script> per page, shared by every chart
  if (!window.__dgmPlotly) {
    window.__dgmPlotly = new Promise((resolve, reject) => {
      if (window.Plotly) return resolve(window.Plotly);
      const s = document.createElement("script");
      s.src = new URL(SRC, document.baseURI).href;
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => { window.__dgmPlotly = null; reject(new Error("plotly.js did not load")); };
      document.head.appendChild(s);
    });
  }
  return window.__dgmPlotly;
}

// -- dense traces, drawn on a canvas -------------------------------------------------------------
const DENSE_MIN = 200;  // points (or heatmap cells) from which a trace is drawn on the canvas
const TYPED = { f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array, i2: Int16Array,
                u2: Uint16Array, i4: Int32Array, u4: Uint32Array };

function values(a) {
  // a plotly data array, flat: a plain array, or plotly.py's binary form {dtype, bdata[, shape]}
  if (Array.isArray(a)) return a.flat();
  if (a && typeof a.bdata === "string" && TYPED[a.dtype]) {
    const bin = atob(a.bdata), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TYPED[a.dtype](bytes.buffer);
  }
  return null;
}

function shape2d(a) {
  // [rows, columns] of a 2D plotly array, or null
  if (Array.isArray(a)) return Array.isArray(a[0]) ? [a.length, a[0].length] : null;
  const s = a && typeof a.shape === "string" ? a.shape.split(",").map(Number) : null;
  return s && s.length === 2 ? s : null;
}

function fixedRange(a) {
  // a linear axis whose range the figure sets (plotly's autorange would not see the points moved
  // to the canvas), or null
  const ok = (a.type || "linear") === "linear" && Array.isArray(a.range) && a.range.length === 2
    && a.range.every((v) => typeof v === "number" && isFinite(v)) && a.autorange !== true;
  return ok ? a.range : null;
}

let rgbaCtx = null;
function rgba(color) {
  // any CSS colour as [r, g, b, a] (0..255)
  if (!rgbaCtx) rgbaCtx = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  rgbaCtx.clearRect(0, 0, 1, 1);
  rgbaCtx.fillStyle = color;
  rgbaCtx.fillRect(0, 0, 1, 1);
  return rgbaCtx.getImageData(0, 0, 1, 1).data;
}

function heatImage(t, nx, ny) {
  // the heatmap's cells as an nx x ny image (top row: the largest y), coloured by its colorscale
  const z = values(t.z), scale = t.colorscale.map(([p, c]) => [p, rgba(c)]);
  const lo = t.zmin, span = t.zmax - t.zmin || 1;
  const img = document.createElement("canvas");
  img.width = nx; img.height = ny;
  const ctx = img.getContext("2d"), out = ctx.createImageData(nx, ny);
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      const v = z[j * nx + i], o = 4 * ((ny - 1 - j) * nx + i);
      if (v === null || !isFinite(v)) continue;  // a missing value: no colour, as plotly leaves it
      const f = Math.min(1, Math.max(0, (v - lo) / span));
      let k = 1;
      while (k < scale.length - 1 && scale[k][0] < f) k++;
      const [p0, c0] = scale[k - 1], [p1, c1] = scale[k], w = p1 > p0 ? (f - p0) / (p1 - p0) : 0;
      for (let c = 0; c < 4; c++) out.data[o + c] = c0[c] + w * (c1[c] - c0[c]);
    }
  }
  ctx.putImageData(out, 0, 0);
  return img;
}

function uniformEdges(c) {
  // cell edges [first, last] of evenly spaced cell centres c, or null
  const n = c && c.length;
  if (!n || n < 2) return null;
  const d = (c[n - 1] - c[0]) / (n - 1);
  for (let i = 1; i < n; i++) if (Math.abs(c[i] - c[i - 1] - d) > 1e-3 * Math.abs(d)) return null;
  return [c[0] - d / 2, c[n - 1] + d / 2];
}

function denseLayer(t, layout) {
  // what the canvas draws for trace t, or null: circles of one colour and size ("markers"), solid
  // lines of one colour and width, gaps allowed ("lines"), or a heatmap of evenly spaced cells with
  // a given colour range ("heatmap"); with many points, on linear axes of fixed range, with nothing
  // per point (text, selection, error bars)
  const axis = (id, xy) => layout[xy + "axis" + (id && id.length > 1 ? id.slice(1) : "")] || {};
  const xr = fixedRange(axis(t.xaxis, "x")), yr = fixedRange(axis(t.yaxis, "y"));
  if (!xr || !yr || t.visible === false || t.text !== undefined || t.hovertext !== undefined
      || t.selectedpoints !== undefined || t.error_x !== undefined || t.error_y !== undefined
      || (t.fill !== undefined && t.fill !== "none"))
    return null;
  // the trace stays in the figure with one point (or cell) far outside the plot: its legend entry
  // and colour bar stay, and it is the same at every frame
  const far = (r) => r[1] + 10 * (r[1] - r[0]);
  const base = { xaxis: t.xaxis || "x", yaxis: t.yaxis || "y", alpha: t.opacity === undefined ? 1 : t.opacity,
                 stub: Object.assign({}, t, { x: [far(xr)], y: [far(yr)], hoverinfo: "skip" }) };
  if (t.type === "heatmap") {
    const sh = shape2d(t.z), x = values(t.x), y = values(t.y);
    const ex = uniformEdges(x), ey = uniformEdges(y);
    if (!sh || !ex || !ey || x.length !== sh[1] || y.length !== sh[0] || sh[0] * sh[1] < DENSE_MIN
        || typeof t.zmin !== "number" || typeof t.zmax !== "number" || !Array.isArray(t.colorscale)
        || (t.zsmooth && t.zsmooth !== "false"))
      return null;
    base.stub.z = [[t.zmin]];
    return Object.assign(base, { kind: "heatmap", image: heatImage(t, sh[1], sh[0]), ex, ey });
  }
  if (t.type !== undefined && t.type !== "scatter") return null;
  const x = values(t.x), y = values(t.y);
  if (!x || !y || Math.min(x.length, y.length) < DENSE_MIN) return null;
  const m = t.marker || {}, l = t.line || {};
  if (t.mode === "markers" && (m.size === undefined || typeof m.size === "number") && typeof m.color === "string"
      && (m.symbol === undefined || m.symbol === "circle") && !(m.line && m.line.width))
    return Object.assign(base, { kind: "markers", x, y, color: m.color, radius: (m.size === undefined ? 6 : m.size) / 2,
                                 alpha: base.alpha * (m.opacity === undefined ? 1 : m.opacity) });
  if (t.mode === "lines" && typeof l.color === "string" && (l.width === undefined || typeof l.width === "number")
      && (l.dash === undefined || l.dash === "solid") && (l.shape === undefined || l.shape === "linear")
      && !t.connectgaps)
    return Object.assign(base, { kind: "lines", x, y, color: l.color, width: l.width === undefined ? 2 : l.width });
  return null;
}

function splitDense(fig) {
  // take the last dense traces out of the figure, to be drawn on the canvas in the same order (the
  // canvas lies above every trace plotly draws, so only traces that no plotly trace covers qualify)
  const layout = fig.layout || {}, data = fig.data || [], found = data.map((t) => denseLayer(t, layout));
  let first = data.length;  // data[first:] are all dense
  while (first > 0 && found[first - 1]) first--;
  const layers = [];
  fig.data = data.map((t, index) => {
    if (index < first) return t;
    layers.push(Object.assign(found[index], { index }));
    return found[index].stub;
  });
  return layers;
}

function drawDense(root) {
  const layers = root.__dgmDense || [], fl = root._fullLayout;
  let cv = root.__dgmCanvas;
  if (!fl || !layers.length) {
    if (cv) cv.getContext("2d").clearRect(0, 0, cv.width, cv.height);
    return;
  }
  const main = root.querySelector(".svg-container > .main-svg");
  if (!main) return;
  if (!cv || cv.parentNode !== main.parentNode) {
    cv = root.__dgmCanvas = document.createElement("canvas");
    cv.className = "dgm-dense";
    cv.style.cssText = "position:absolute;left:0;top:0;pointer-events:none;";
    main.after(cv);  // above the plot's own layers, below the hover labels
  }
  const w = fl.width, h = fl.height, r = window.devicePixelRatio || 1;
  if (cv.width !== Math.round(w * r) || cv.height !== Math.round(h * r)) {
    cv.width = Math.round(w * r); cv.height = Math.round(h * r);
    cv.style.width = w + "px"; cv.style.height = h + "px";
  }
  const ctx = cv.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  ctx.clearRect(0, 0, w, h);
  for (const L of layers) {
    const shown = root.data && root.data[L.index];
    if (!shown || shown.visible === false || shown.visible === "legendonly") continue;
    const xa = fl["xaxis" + L.xaxis.slice(1)], ya = fl["yaxis" + L.yaxis.slice(1)];
    if (!xa || !ya || !xa.c2p || !ya.c2p) continue;
    const px = (v) => (v === null ? NaN : xa._offset + xa.c2p(v));
    const py = (v) => (v === null ? NaN : ya._offset + ya.c2p(v));
    ctx.save();
    ctx.beginPath();
    ctx.rect(xa._offset, ya._offset, xa._length, ya._length);
    ctx.clip();
    ctx.globalAlpha = L.alpha;
    if (L.kind === "heatmap") {
      const x0 = px(L.ex[0]), x1 = px(L.ex[1]), y0 = py(L.ey[1]), y1 = py(L.ey[0]);
      ctx.imageSmoothingEnabled = false;  // cells, as plotly draws them
      ctx.drawImage(L.image, Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    } else if (L.kind === "markers") {
      ctx.fillStyle = L.color;
      const n = Math.min(L.x.length, L.y.length);
      for (let i = 0; i < n; i++) {
        const u = px(L.x[i]), v = py(L.y[i]);
        if (!isFinite(u) || !isFinite(v)) continue;
        ctx.beginPath();  // one fill per point: overlapping points darken, as SVG markers do
        ctx.arc(u, v, L.radius, 0, 2 * Math.PI);
        ctx.fill();
      }
    } else {
      ctx.strokeStyle = L.color;
      ctx.lineWidth = L.width;
      ctx.lineJoin = ctx.lineCap = "round";
      ctx.beginPath();
      let down = false;
      const n = Math.min(L.x.length, L.y.length);
      for (let i = 0; i < n; i++) {  // a missing point lifts the pen, as plotly's gaps do
        const u = px(L.x[i]), v = py(L.y[i]);
        if (!isFinite(u) || !isFinite(v)) { down = false; continue; }
        if (down) ctx.lineTo(u, v); else ctx.moveTo(u, v);
        down = true;
      }
      ctx.stroke();
    }
    ctx.restore();
  }
}

export default function (component) {
  const { data, parentElement } = component;
  let root = parentElement.querySelector("." + CLASS);
  if (!root) {
    root = document.createElement("div");
    root.className = CLASS;
    root.setAttribute("data-testid", "dgmPlot");
    parentElement.appendChild(root);
  }
  // on unmount: once the chart has left the page, free plotly's state and its resize listener
  const cleanup = () => setTimeout(() => { if (!root.isConnected && window.Plotly) window.Plotly.purge(root); }, 0);
  const spec = data && data.spec;
  if (!spec || root.__dgmSpec === spec) return cleanup;  // the same figure again: nothing to redraw
  root.__dgmSpec = spec;
  const fig = JSON.parse(spec);
  if (fig.layout && fig.layout.height) root.style.minHeight = fig.layout.height + "px";
  const config = { displaylogo: false, responsive: true };
  // updates are chained: a figure waits for the previous one to be drawn
  root.__dgmQueue = (root.__dgmQueue || Promise.resolve())
    .then(loadPlotly)
    .then((Plotly) => {
      if (root.__dgmSpec !== spec) return;  // a newer figure came meanwhile: draw that one
      // uirevision: a zoom, pan or legend choice of the reader survives the next frames
      const layout = Object.assign({ uirevision: "dgm" }, fig.layout, { autosize: true });
      delete layout.width;
      // a range the reader zoomed or panned to wins over the figure's own, which may move every frame
      // (a view that follows its samples), until a double click gives the view back
      for (const [ax, range] of Object.entries(root.__dgmUserRanges || {})) {
        layout[ax] = Object.assign({}, layout[ax], { range: range.slice(), autorange: false });
      }
      root.__dgmDense = splitDense(fig);
      // traces the same as last time are handed over as the same objects: plotly then sees no
      // change in them, and redraws only what did change (on a live view often only the title)
      const key = JSON.stringify(fig.data);
      const data = key === root.__dgmDataKey && root.data ? root.data : fig.data;
      root.__dgmDataKey = key;
      // so are the parts of the layout (plotly compares some, the template among them, by identity:
      // a new template object alone makes it draw everything anew)
      const prev = root.__dgmLayout || {}, json = {};
      for (const [k, v] of Object.entries(layout)) {
        if (v === null || typeof v !== "object") continue;
        json[k] = JSON.stringify(v);
        if (prev[k] && prev[k].json === json[k]) layout[k] = prev[k].value;
      }
      root.__dgmLayout = Object.fromEntries(Object.keys(json).map((k) => [k, { json: json[k], value: layout[k] }]));
      return Plotly.react(root, data, layout, config);
    })
    .then(() => {
      if (!root.__dgmHooked) {  // zoom, pan, resize and legend clicks redraw the canvas too
        root.__dgmHooked = true;
        root.on("plotly_afterplot", () => drawDense(root));
        root.on("plotly_relayout", (ev) => {
          const user = root.__dgmUserRanges || {};
          for (const ax of ["xaxis", "yaxis"]) {
            if (ev[ax + ".autorange"]) delete user[ax];
            const r = ev[ax + ".range"] || (ax + ".range[0]" in ev ? [ev[ax + ".range[0]"], ev[ax + ".range[1]"]] : null);
            if (r) user[ax] = r;
          }
          root.__dgmUserRanges = user;
        });
      }
      drawDense(root);
      root.setAttribute("data-drawn", "true");
    })
    .catch((e) => {
      root.textContent = "This chart could not be drawn: " + e.message;
    });
  return cleanup;
}
