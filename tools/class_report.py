"""grades.csv, mistakes.csv and report.html for tools/grade_class.py; report.html is one self-contained page (inline CSS and SVG, no script, no network).

Every text that comes from a submission (student names from the export, the grader's messages, which
quote the student's code and errors) is HTML-escaped: a submission cannot put markup in the report.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
.lead { color: #555; margin: 0 0 12px; } .cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 20px; } .card span { color: #666; font-size: 12px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; align-items: start; }
table { border-collapse: collapse; width: 100%; } td, th { padding: 4px 8px; border-bottom: 1px solid #eee;
text-align: left; vertical-align: top; } th { background: #f6f6f6; font-weight: 600; }
.bar { background: #e8eef7; height: 14px; position: relative; min-width: 120px; }
.bar i { background: #3b6fb6; display: block; height: 14px; } .num { text-align: right; white-space: nowrap; }
.why { color: #444; font-size: 13px; } .who { color: #555; font-size: 12px; } .muted { color: #888; }
.bad { color: #a33; } code { background: #f4f4f4; padding: 0 3px; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(score: float) -> str:
    return f"{score:g}" if score == int(score) else f"{score:.2f}"


def histogram(totals: list[float], possible: float, bins: int = 10) -> str:
    """An SVG bar chart of the totals in `bins` equal ranges of 0..possible."""
    counts = [0] * bins
    for total in totals:
        counts[min(int(total / possible * bins) if possible else 0, bins - 1)] += 1
    width, height, left, bottom = 480, 200, 30, 36
    bar = (width - left) / bins
    top = max(counts + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="score distribution">']
    for i, count in enumerate(counts):
        h = (height - bottom - 14) * count / top
        x, y = left + i * bar, height - bottom - h
        parts.append(f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar - 4:.1f}" height="{h:.1f}" fill="#3b6fb6"/>')
        if count:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" font-size="11" text-anchor="middle">{count}</text>')
        low = possible * i / bins
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">'
                     f'{fmt(round(low, 1))}</text>')
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#999"/>')
    parts.append(f'<text x="{(width + left) / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
                 f'total points (of {fmt(possible)}), lower edge of each range</text></svg>')
    return "".join(parts)


def _bar(share: float) -> str:
    return f'<div class="bar"><i style="width:{100 * share:.1f}%"></i></div>'


def render(report: dict) -> str:
    """The page for `report`, the dict tools/grade_class.py builds (see its `summarise`)."""
    students, entries, mistakes = report["students"], report["entries"], report["mistakes"]
    graded = [s for s in students if s["total"] is not None]
    totals = sorted(s["total"] for s in graded)
    possible = sum(points for _, points in entries)
    n = len(graded)
    mean = sum(totals) / n if n else 0.0
    median = (totals[(n - 1) // 2] + totals[n // 2]) / 2 if n else 0.0
    full = sum(1 for t in totals if t == possible)
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(report['title'])}</title>"
           f"<style>{STYLE}</style></head><body>",
           f"<h1>{esc(report['title'])}</h1><p class='lead'>{esc(report['subtitle'])}</p><div class='cards'>"]
    cards = [(len(students), "submissions"), (fmt(round(mean, 2)), f"mean of {fmt(possible)}"),
             (fmt(round(median, 2)), "median"), (full, "full marks"),
             (sum(len(m["students"]) for m in mistakes if m.get("named", True)), "named mistakes made"),
             (len(report["problems"]), "need a look")]
    out += [f"<div class='card'><b>{esc(value)}</b><span>{esc(label)}</span></div>" for value, label in cards]
    out.append("</div><div class='grid'><div><h2>Score distribution</h2>" + histogram(totals, possible) + "</div>")
    out.append("<div><h2>Pass rate per function</h2><table><tr><th>function</th><th>full marks</th><th></th>"
               "<th class='num'>mean</th></tr>")
    for name, points in entries:
        scores = [s["scores"].get(name, 0.0) for s in graded]
        passed = sum(1 for score in scores if score == points) / n if n else 0.0
        average = sum(scores) / n / points if n and points else 0.0
        out.append(f"<tr><td><code>{esc(name)}</code></td><td class='num'>{100 * passed:.0f}%</td>"
                   f"<td>{_bar(passed)}</td><td class='num'>{100 * average:.0f}%</td></tr>")
    out.append("</table></div></div>")
    out.append("<h2>Named mistakes, most common first</h2>")
    if not mistakes:
        out.append("<p class='muted'>No catalogued mistake was recognised.</p>")
    else:
        out.append("<table><tr><th class='num'>students</th><th>mistake</th><th>what students were told</th></tr>")
        for m in mistakes:
            share = len(m["students"]) / len(students) if students else 0.0
            out.append(f"<tr><td class='num'>{len(m['students'])} ({100 * share:.0f}%)</td>"
                       f"<td><b>{esc(m['title'])}</b><br><span class='muted'>{esc(m['part'])}, "
                       f"<code>{esc(m['function'])}</code></span></td><td><div class='why'>{esc(m['why'])}</div>"
                       f"<div class='who'>{esc(', '.join(m['students']))}</div></td></tr>")
        out.append("</table>")
    out.append("<h2>Submissions that need a look</h2>")
    if not report["problems"]:
        out.append("<p class='muted'>None timed out, crashed, failed to import, missed a file or looked like "
                   "tampering.</p>")
    else:
        out.append("<table><tr><th>student</th><th>what happened</th></tr>")
        for student, lines in report["problems"]:
            out.append(f"<tr><td>{esc(student)}</td><td>" + "<br>".join(esc(line) for line in lines) + "</td></tr>")
        out.append("</table>")
    out.append("<h2>Every student</h2><table><tr><th>student</th><th class='num'>total</th>"
               "<th>points lost in</th></tr>")
    for s in students:
        total = "<span class='bad'>not graded</span>" if s["total"] is None else fmt(s["total"])
        lost = ", ".join(f"{name} ({fmt(s['scores'].get(name, 0.0))}/{fmt(points)})" for name, points in entries
                         if s["total"] is not None and s["scores"].get(name, 0.0) < points)
        out.append(f"<tr><td>{esc(s['student'])}</td><td class='num'>{total}</td><td class='who'>{esc(lost)}</td></tr>")
    out.append(f"</table><p class='muted'>{esc(report['footer'])}</p></body></html>")
    return "\n".join(out)


def write(path: Path, report: dict) -> None:
    path.write_text(render(report), encoding="utf-8")


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in report["entries"]]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "total", *names])
        for s in report["students"]:
            graded = s["total"] is not None
            writer.writerow([s["student"], fmt(s["total"]) if graded else "",
                             *[fmt(s["scores"].get(n, 0.0)) if graded else "" for n in names]])
    with open(out / "mistakes.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "part", "function", "mistake"])
        writer.writerows(report["mistake_rows"])
    write(out / "report.html", report)
