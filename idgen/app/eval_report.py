"""The CSV and the HTML report of `idgen eval generate` (`idgen.app.eval_generate`).

The report is one self-contained HTML file: a summary table per method, inline-SVG plots drawn
here (no plotting library: a strip of each method's per-image identity similarities, and speed
against similarity) and image grids per identity x method, whose `<img>` tags point to the
generated files by paths relative to the report, so the output folder can be moved or served
as a whole.
"""

from __future__ import annotations

import csv
import html
import os
from pathlib import Path
from typing import Optional, Sequence

from idgen.app.records import finite_values

#: The per-image columns of `metrics.csv`, the keys of `metrics.json`'s `images` in the same order.
IMAGE_COLUMNS = ("identity", "method", "base_method", "people", "prompt_index", "prompt", "seed", "index", "file",
                 "detection", "similarity_dlib", "distance_dlib", "similarity_arcface", "kps_error", "leakage_dlib",
                 "leakage_arcface", "clip_score", "seconds_per_image", "peak_memory_mib", "memory_kind", "reused")
#: The summary table's columns: (key of a method's summary, heading, digits).
SUMMARY_COLUMNS = (("images", "images", 0), ("detection_rate", "detected", 2),
                   ("similarity_dlib", "FaceSim dlib ↑", 3), ("verification_rate_dlib", "same person (dlib) ↑", 2),
                   ("similarity_arcface", "FaceSim ArcFace ↑", 3), ("kps_error", "keypoint error ↓", 3),
                   ("leakage_dlib", "leakage ↓", 3), ("clip_score", "CLIP score ↑", 2),
                   ("diversity_dlib", "diversity ↑", 3), ("seconds_per_image", "s / image ↓", 2),
                   ("peak_memory_mib", "peak MiB ↓", 0))
MEMORY_KINDS = {"cuda_max_memory_allocated": "torch.cuda.max_memory_allocated during each call",
                "process_peak_rss_growth": "CPU: the process's peak RSS during each call over its RSS at the start"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
THUMBNAIL = 112

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; font-size: 14px; }
th:first-child, td:first-child { text-align: left; }
td.na { color: #999; font-style: italic; }
.warning { background: #fff3cd; border: 1px solid #e0c36a; padding: 8px 12px; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; }
figure { margin: 0; text-align: center; font-size: 11px; color: #555; }
figure img { display: block; width: %dpx; height: %dpx; object-fit: cover; border: 1px solid #ddd; }
.grid td { vertical-align: top; text-align: left; }
svg text { font-family: system-ui, sans-serif; font-size: 12px; }
""" % (THUMBNAIL, THUMBNAIL)


# -------------------------------------------------------------------------------------------- CSV
def csv_cell(value) -> str:
    """A CSV cell: empty for None (not measured), true/false for booleans, else `str` (floats as in the JSON)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(path: Path, rows: Sequence[dict]) -> Path:
    """One line per image, `IMAGE_COLUMNS` (empty: not measured; booleans as true/false)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(IMAGE_COLUMNS)
        for row in rows:
            writer.writerow([csv_cell(row.get(column)) for column in IMAGE_COLUMNS])
    return path


# ------------------------------------------------------------------------------------------ plots
def _range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    span = high - low
    if span < 1e-9:
        return low - 0.05, high + 0.05
    return low - pad * span, high + pad * span


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def _text(x, y, text, anchor="start", **attributes) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(str(text))}</text>'


def strip_plot(title: str, groups: dict[str, Sequence[Optional[float]]], width: int = 720) -> str:
    """An SVG strip chart: one row per group, a dot per value (deterministically jittered), the
    mean as a black bar; a group without a value says "not measured"."""
    left, right, top, row, bottom = 210, 40, 34, 32, 36
    values = [v for vs in groups.values() for v in finite_values(vs)]
    low, high = _range(values)
    height = top + row * max(len(groups), 1) + bottom

    def x_of(v):
        return left + (v - low) / (high - low) * (width - left - right)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             _text(8, 20, title, font_weight="bold")]
    axis_y = top + row * max(len(groups), 1)
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{x_of(tick):.1f}" y1="{top}" x2="{x_of(tick):.1f}" y2="{axis_y}" stroke="#eee"/>')
        parts.append(_text(x_of(tick), axis_y + 16, f"{tick:.3f}", "middle"))
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#888"/>')
    for i, (label, group) in enumerate(groups.items()):
        centre, colour = top + row * i + row / 2, PALETTE[i % len(PALETTE)]
        parts.append(_text(left - 8, centre + 4, label, "end"))
        finite = finite_values(group)
        if not finite:
            parts.append(_text(left + 8, centre + 4, "not measured (no face found)", fill="#999"))
            continue
        for j, v in enumerate(finite):
            jitter = ((j * 0.618034) % 1.0 - 0.5) * row * 0.6
            parts.append(f'<circle cx="{x_of(v):.1f}" cy="{centre + jitter:.1f}" r="3.5" fill="{colour}" '
                         f'fill-opacity="0.6"><title>{v:.4f}</title></circle>')
        mean = sum(finite) / len(finite)
        parts.append(f'<line x1="{x_of(mean):.1f}" y1="{centre - row * 0.4:.1f}" x2="{x_of(mean):.1f}" '
                     f'y2="{centre + row * 0.4:.1f}" stroke="#000" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def scatter_plot(title: str, points: dict[str, tuple[Optional[float], Optional[float]]], x_label: str,
                 y_label: str, width: int = 720, height: int = 360) -> str:
    """An SVG scatter plot of labelled points `{label: (x, y)}`; points with a missing coordinate
    are listed under it as not plotted."""
    left, right, top, bottom = 70, 30, 34, 64
    shown = {k: (x, y) for k, (x, y) in points.items() if x is not None and y is not None}
    if not shown:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="48" role="img">'
                f'{_text(8, 20, title, font_weight="bold")}'
                f'{_text(8, 40, "not plotted: no method has a measured similarity", fill="#999")}</svg>')
    (x_low, x_high), (y_low, y_high) = (_range([p[0] for p in shown.values()], 0.15),
                                        _range([p[1] for p in shown.values()], 0.15))

    def xy(x, y):
        return (left + (x - x_low) / (x_high - x_low) * (width - left - right),
                height - bottom - (y - y_low) / (y_high - y_low) * (height - top - bottom))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             _text(8, 20, title, font_weight="bold")]
    for tick in _ticks(x_low, x_high):
        px, _ = xy(tick, y_low)
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom}" stroke="#eee"/>')
        parts.append(_text(px, height - bottom + 16, f"{tick:.2f}", "middle"))
    for tick in _ticks(y_low, y_high):
        _, py = xy(x_low, tick)
        parts.append(f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#eee"/>')
        parts.append(_text(left - 6, py + 4, f"{tick:.3f}", "end"))
    parts += [f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
              'fill="none" stroke="#888"/>',
              _text((left + width - right) / 2, height - bottom + 34, x_label, "middle"),
              _text(14, (top + height - bottom) / 2, y_label, "middle",
                    transform=f"rotate(-90 14 {(top + height - bottom) / 2:.1f})")]
    for i, label in enumerate(points):
        if label in shown:
            px, py = xy(*shown[label])
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{PALETTE[i % len(PALETTE)]}"/>')
            far_right = px > left + 0.7 * (width - left - right)
            parts.append(_text(px - 9 if far_right else px + 9, py - 7, label, "end" if far_right else "start"))
    missing = [k for k in points if k not in shown]
    if missing:
        parts.append(_text(left, height - 8, "not plotted (no similarity measured): " + ", ".join(missing), fill="#999"))
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------- HTML
def _format(value, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _summary_table(summary: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in SUMMARY_COLUMNS)
    body = []
    for label, s in summary.items():
        cells = []
        for key, _, digits in SUMMARY_COLUMNS:
            reason = s["not_measured"].get(key)
            if s[key] is None:
                cells.append(f'<td class="na" title="{html.escape(reason or "not measured")}">not measured</td>')
            else:
                cells.append(f"<td>{_format(s[key], digits)}</td>")
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def _relative(path, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def _figure(src: str, caption: str, tooltip: str = "") -> str:
    return (f'<figure><img src="{html.escape(src)}" loading="lazy" alt="{html.escape(caption)}" '
            f'title="{html.escape(tooltip or caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _grids(report: dict, root: Path) -> str:
    """Per identity (and pair): its reference photos, then a row of images per method."""
    sections = []
    identities = {i["name"]: i for i in report["identities"]}
    for name in dict.fromkeys(r["identity"] for r in report["images"]):
        names = name.split("+") if name not in identities else [name]
        references = "".join(_figure(_relative(p, root), f"reference {Path(p).name}")
                             for n in names for p in identities.get(n, {}).get("photos", [])[:4])
        rows = []
        for label in report["summary"]:
            images = [r for r in report["images"] if r["identity"] == name and r["method"] == label]
            if not images:
                continue
            figures = "".join(
                _figure(r["file"], f"{'id prompt' if r['prompt_index'] is None else 'p' + str(r['prompt_index'])} "
                                   f"s{r['seed']} #{r['index']} · {_format(r['similarity_dlib'], 2)}",
                        f"{r['prompt'] or '(identity prompt)'}\ndlib similarity: {_format(r['similarity_dlib'], 3)}")
                for r in images)
            rows.append(f'<tr><td>{html.escape(label)}</td><td><div class="strip">{figures}</div></td></tr>')
        sections.append(f"<h3>{html.escape(name)}</h3><div class='strip'>{references}</div>"
                        f"<table class='grid'>{''.join(rows)}</table>")
    return "".join(sections)


def write_html(path: Path, report: dict) -> Path:
    """The report page (see the module docstring)."""
    path = Path(path)
    root = path.parent
    summary, images = report["summary"], report["images"]
    plots = [strip_plot("identity similarity to the references, dlib 128-d (cosine; one dot per image, bar = mean)",
                        {label: [r["similarity_dlib"] for r in images if r["method"] == label] for label in summary})]
    if report["recognizers"]["arcface"]:
        plots.append(strip_plot("identity similarity, ArcFace (the adapters' own embedding: flattering to them)",
                                {label: [r["similarity_arcface"] for r in images if r["method"] == label]
                                 for label in summary}))
    plots.append(scatter_plot("speed vs identity similarity (per method: mean)",
                              {label: (s["seconds_per_image"], s["similarity_dlib"]) for label, s in summary.items()},
                              "seconds per image", "FaceSim (dlib)"))
    counts = (f"{len(report['identities'])} identities × {len(summary)} methods × {len(report['prompts'])} prompts × "
              f"{len(report['seeds'])} seeds × {report['num_per_prompt']} per prompt{' + pairs' if report['pairs'] else ''}: "
              f"{len(images)} images ({report['generated']} items generated, {report['reused']} reused, "
              f"{report['failed']} failed)")
    warning = ('<p class="warning">The tiny embedded default (random weights) made these images: they are noise, so '
               'faces are not found and the identity figures are "not measured". Configure real weights '
               '(<code>idgen doctor</code>) for meaningful numbers.</p>' if report["embedded_default"] else "")
    memory = MEMORY_KINDS.get(next((s["memory_kind"] for s in summary.values() if s["memory_kind"]), None))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"])
    definitions = "".join(f"<dt><code>{html.escape(k)}</code></dt><dd>{html.escape(v)}</dd>"
                          for k, v in report["metric_definitions"].items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>idgen eval generate</title><style>{_STYLE}</style></head>
<body>
<h1>idgen eval generate</h1>
<p>{html.escape(counts)}</p>
{warning}
<h2>Summary</h2>
{_summary_table(summary)}
<p>Peak memory: {html.escape(memory or "not measured")}. Hover a "not measured" cell for the reason.
Data: <a href="metrics.json">metrics.json</a>, <a href="metrics.csv">metrics.csv</a>.</p>
<h2>Plots</h2>
{"<br>".join(plots)}
<h2>Images</h2>
<p>Caption: prompt, seed, image index · dlib similarity. Hover an image for its prompt.</p>
{_grids(report, root)}
<h2>Prompts</h2>
<ol start="0">{"".join(f"<li>{html.escape(p)}</li>" for p in report["prompts"])}</ol>
<h2>Notes</h2>
<ul>{notes or "<li>none</li>"}</ul>
<h2>Metrics</h2>
<dl>{definitions}</dl>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
