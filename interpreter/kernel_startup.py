# Wrenn code interpreter: run silently in every new (or restarted) kernel by bridge.py. It defines the
# module `_wrenn` (per-call environment variables, chart extraction) and registers a display formatter
# that adds the chart's data to every matplotlib figure the kernel displays, as the MIME type
# application/vnd.wrenn.chart+json. It imports no plotting library: figures are recognised by name,
# so a kernel that never plots never pays for matplotlib.


def _wrenn_setup(cwd):
    import os
    import sys
    import types

    mod = types.ModuleType("_wrenn")
    saved = []

    def set_env(values):
        saved.append({k: os.environ.get(k) for k in values})
        os.environ.update({str(k): str(v) for k, v in values.items()})

    def restore_env():
        while saved:
            for k, v in saved.pop().items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    max_points = 10_000

    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        if f != f or f in (float("inf"), float("-inf")):
            return str(f)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f

    def label_of(artist, i):
        label = artist.get_label() if hasattr(artist, "get_label") else ""
        return label if label and not label.startswith("_") else f"series {i}"

    def axis_info(ax):
        def ticks(axis_ticks, labels):
            return [num(t) for t in axis_ticks], [t.get_text() for t in labels]

        xt, xl = ticks(ax.get_xticks(), ax.get_xticklabels())
        yt, yl = ticks(ax.get_yticks(), ax.get_yticklabels())
        return {
            "x_label": ax.get_xlabel() or None,
            "y_label": ax.get_ylabel() or None,
            "x_unit": None,
            "y_unit": None,
            "x_ticks": xt,
            "x_tick_labels": xl,
            "x_scale": ax.get_xscale(),
            "y_ticks": yt,
            "y_tick_labels": yl,
            "y_scale": ax.get_yscale(),
        }

    def chart_of_axes(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        title = ax.get_title() or ""
        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if wedges:
            texts = [t.get_text() for t in ax.texts]
            elements = []
            for i, w in enumerate(wedges):
                label = w.get_label()
                if not label or label.startswith("_"):
                    label = texts[i] if i < len(texts) else f"slice {i}"
                elements.append({"label": label, "angle": num(abs(w.theta2 - w.theta1)), "radius": num(w.r)})
            return {"type": "pie", "title": title, "elements": elements}
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        if bars:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            ticks = list(ax.get_xticks())
            elements = []
            for gi, container in enumerate(bars):
                group = label_of(container, gi)
                for rect in container.patches:
                    x = rect.get_x() + rect.get_width() / 2
                    label = str(num(x))
                    for t, text in zip(ticks, labels):
                        if abs(t - x) < rect.get_width() / 2 and text:
                            label = text
                    elements.append({"label": label, "value": str(num(rect.get_height())), "group": group})
            info = axis_info(ax)
            return {
                "type": "bar",
                "title": title,
                "x_label": info["x_label"],
                "y_label": info["y_label"],
                "x_unit": None,
                "y_unit": None,
                "elements": elements,
            }
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 0]
        scatters = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets()) > 0]
        if lines or scatters:
            elements = []
            for i, line in enumerate(lines):
                xs, ys = line.get_xdata(), line.get_ydata()
                pts = [[num(x), num(y)] for x, y in list(zip(xs, ys))[:max_points]]
                elements.append({"label": label_of(line, i), "points": pts})
            for i, coll in enumerate(scatters):
                pts = [[num(x), num(y)] for x, y in coll.get_offsets()[:max_points]]
                elements.append({"label": label_of(coll, len(lines) + i), "points": pts})
            kind = "scatter" if scatters and not lines else "line"
            return {"type": kind, "title": title, **axis_info(ax), "elements": elements}
        return {"type": "unknown", "title": title, "elements": []}

    def chart_of_figure(fig):
        """The figure's data: chart type, title, axes, series with their points (E2B's chart shape)."""
        try:
            axes = [ax for ax in fig.get_axes() if ax.get_visible()]
            charts = [chart_of_axes(ax) for ax in axes]
            if not charts:
                return None
            if len(charts) == 1:
                chart = charts[0]
                if not chart["title"] and fig._suptitle is not None:
                    chart["title"] = fig._suptitle.get_text()
                return chart
            title = fig._suptitle.get_text() if fig._suptitle is not None else ""
            return {"type": "superchart", "title": title, "elements": charts}
        except Exception:  # noqa: BLE001 - a chart we cannot read must never break the figure's display
            return None

    mod.set_env = set_env
    mod.restore_env = restore_env
    mod.chart_of_figure = chart_of_figure
    sys.modules["_wrenn"] = mod

    ip = get_ipython()  # noqa: F821 - defined in every IPython kernel
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    def data_of_frame(frame):
        """A DataFrame's first rows as {columns, index, data}; pandas writes NaN as null."""
        import json

        try:
            return json.loads(frame.head(1000).to_json(orient="split", date_format="iso", default_handler=str))
        except Exception:  # noqa: BLE001 - the HTML and text forms still show the frame
            return None

    def register(mime, module, name, func):
        # Matched by class name rather than registered with for_type_by_name: the inline backend pops
        # every formatter's Figure printer when it is activated (the first pyplot import).
        class Formatter(BaseFormatter):
            format_type = Unicode(mime)
            _return_type = dict
            print_method = ObjectName("_repr_wrenn_none_")

            def __call__(self, obj):
                if not any((c.__module__, c.__name__) == (module, name) for c in type(obj).__mro__):
                    return None
                try:
                    return func(obj)
                except Exception:  # noqa: BLE001 - the object's other formats still display
                    return None

        ip.display_formatter.formatters[mime] = Formatter(parent=ip.display_formatter)

    register("application/vnd.wrenn.chart+json", "matplotlib.figure", "Figure", chart_of_figure)
    register("application/vnd.wrenn.data+json", "pandas.core.frame", "DataFrame", data_of_frame)

    # Plain tracebacks: they are read by programs and language models, not terminals.
    ip.run_line_magic("colors", "NoColor")

    if cwd:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)

