"""What a class got wrong, read from the autograder's results (tools/grade_class.py's report as plain data).

Each function that lost points is explained by the catalogued mistakes its feedback names: an "output"
mistake by its title (the hidden reference stores each mistake's title and explanation), a "message"
mistake by the phrase its message contains (from the catalogue its part's row names). A loss that none
explains is "unrecognised"; what kept a function from being checked at all is named in parentheses.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tools.mistakes_format import load

KNOWN_MISTAKE = re.compile(r"known mistake(?: in (\w+))?: (.*)\.\n")
# What stops a function from being checked at all, as its output says it: (phrase, label).
BLOCKERS = [("Nothing could be checked", "(could not be imported)"), ("in your submission (you uploaded", "(file missing)"),
            ("not implemented yet", "(not implemented)"), ("timed out after", "(timed out)"),
            ("stopped the process", "(crashed the process)"), ("wrote to the grader's channel", "(wrote to the grader)")]
# Code a solution never needs. Flagged for a human to read; it changes no grade.
SUSPICIOUS = [
    (r"\batexit\b", "registers exit hooks (atexit)"), (r"os\._exit|\bsys\.exit\b|\bexit\(", "exits the process"),
    (r"\bglob\b|os\.walk|\brglob\b|listdir|scandir", "searches the file system"),
    (r"/autograder|results?\.json|\bhidden\w*\.pt|\breference/", "names the grader's files"),
    (r"\bsubprocess\b|os\.system|os\.fork|os\.exec|\bpty\b", "starts other programs"),
    (r"\bctypes\b|gc\.get_objects|sys\._getframe|inspect\.stack|__code__|f_back\b", "reaches into the interpreter"),
    (r"\bgrading\b|\bpytest\b|test_\w+\.py|sys\.modules", "touches the grader's modules"),
    (r"os\.kill|\bsignal\.|setitimer", "sends or catches signals"),
    (r"\bsocket\b|urllib|\brequests\b|http\.client", "uses the network"),
    (r"\bopen\(|write_text|write_bytes|shutil\.", "reads or writes files"),
]


def part_label(name: str, part) -> str:
    return part.title or "Part 1"


def entry_names(autograder) -> list[tuple[str, int]]:
    """(results.json entry name, points) for every graded function, in Gradescope's order."""
    return [(f"{part.title}: {f}" if part.title else f, points)
            for part in autograder.parts.values() for f, points in part.points.items()]


def catalogue(autograder) -> dict[str, dict]:
    """Per entry name prefix (a part's title), the mistakes its grader can name: output mistakes by title
    (from the hidden reference) and message mistakes (caught by a check, not by their output) by the phrase
    their message contains, from the catalogue that the part's row names."""
    known = {}
    for name, part in autograder.parts.items():
        reference = torch.load(autograder.folder / "reference" / part.reference, map_location="cpu", weights_only=True)
        by_title = {m["title"]: {**m, "key": key} for key, m in reference.get("mistakes", {}).items()}
        by_phrase = []
        try:
            by_phrase = [m for m in load(getattr(part, "mistakes", "")).mistakes if m.detect == "message" and m.expect]
        except (ImportError, ValueError, AttributeError):  # ValueError: a row that names no catalogue
            pass  # then a failure that only a message mistake explains is listed as unrecognised
        known[name] = {"titles": by_title, "phrases": by_phrase, "label": part_label(name, part), "part": part}
    return known


def split_entry(name: str, known: dict) -> tuple[dict, str]:
    """The part (catalogue entry) and function of a results.json entry name ("Part 2: p_losses")."""
    for info in known.values():
        title = info["part"].title
        if title and name.startswith(title + ": "):
            return info, name[len(title) + 2:]
    return next(info for info in known.values() if not info["part"].title), name


def mistakes_of(graded, known: dict) -> list[tuple[str, str, str, dict | None]]:
    """(part, function, mistake, catalogue entry or None) for each function that lost points."""
    rows = []
    for test in graded.results["tests"] if graded.results else []:
        if test["score"] >= test["max_score"]:
            continue
        info, function = split_entry(test["name"], known)
        found = []
        for culprit, title in KNOWN_MISTAKE.findall(test["output"]):
            entry = info["titles"].get(title, {"title": title, "why": "", "function": culprit or function})
            found.append((entry["function"], entry["title"], entry))
        matching = [m for m in info["phrases"] if m.function == function and m.expect in test["output"]]
        for phrase in dict.fromkeys(m.expect for m in matching):  # one message can fit several mistakes
            same = [m for m in matching if m.expect == phrase]
            title = " or ".join(m.title for m in same)
            found.append((function, title, {"title": title, "why": " ".join(dict.fromkeys(m.why for m in same))}))
        blockers = [label for phrase, label in BLOCKERS if phrase in test["output"]]
        if not found:
            found = [(function, blockers[0] if blockers else "unrecognised", None)]
        for culprit, title, entry in found:
            row = (info["label"], culprit, title, entry)
            if all(row[:3] != r[:3] for r in rows):
                rows.append(row)
    return rows


def suspicious_code(submission, autograder) -> list[str]:
    """What in the student's own files a solution never needs, with the line numbers."""
    notes = []
    names = sorted({f for part in autograder.parts.values() for f in part.student_files})
    for name in names:
        found = sorted(p for p in submission.folder.rglob(name) if p.is_file())
        if not found:
            continue
        try:
            lines = found[0].read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for pattern, what in SUSPICIOUS:
            hits = [i + 1 for i, line in enumerate(lines)
                    if not line.lstrip().startswith("#") and re.search(pattern, line.split(" #")[0])]
            if hits:
                where = ", ".join(map(str, hits[:5])) + (" ..." if len(hits) > 5 else "")
                notes.append(f"{name} {what} (line {where})")
    return notes


def summarise(graded: list, submissions: list, autograder, known: dict,
              source: Path) -> dict:
    """The class's report as plain data: what grades.csv, mistakes.csv and report.html show."""
    folders = {s.student: s for s in submissions}
    entries = entry_names(autograder)
    students, mistake_rows, problems, ranked = [], [], [], {}
    for g in graded:
        scores = {t["name"]: t["score"] for t in g.results["tests"]} if g.results else {}
        students.append({"student": g.student, "total": g.results["score"] if g.results else None, "scores": scores})
        lines = [f"not graded: the grader failed ({g.fault}); grade this submission again alone"] if g.fault else []
        blocked: dict[tuple[str, str], list[str]] = {}
        for part, function, mistake, entry in mistakes_of(g, known):
            mistake_rows.append((g.student, part, function, mistake))
            if entry is not None:
                key = (part, function, mistake)
                ranked.setdefault(key, {"title": mistake, "part": part, "function": function,
                                        "why": entry.get("why", ""), "students": []})["students"].append(g.student)
            elif mistake.startswith("("):
                blocked.setdefault((part, mistake.strip("()")), []).append(function)
            else:  # where the catalogue could grow
                ranked.setdefault((part, function, mistake), {
                    "title": f"unrecognised: points lost in {function} that no catalogued mistake explains",
                    "part": part, "function": function, "students": [], "named": False,
                    "why": "Their feedback says what differs; a new mistake for the catalogue may be among them.",
                })["students"].append(g.student)
        for (part, what), functions in blocked.items():
            lines.append(f"{part}, {what}: {', '.join(functions)}")
        if any(what in ("file missing", "could not be imported") for _, what in blocked):
            lines.append(re.sub(r"^Score [\d.]+ of [\d.]+\. ", "", g.results["output"])[:400])
        lines += g.flags
        notes = suspicious_code(folders[g.student], autograder)
        if notes:
            lines.append("code a solution never needs (tampering?): " + "; ".join(notes))
        if lines:
            problems.append((g.student, list(dict.fromkeys(lines))))
    mistakes = sorted(ranked.values(), key=lambda m: (-len(m["students"]), not m.get("named", True), m["part"],
                                                      m["function"], m["title"]))
    parts = ", ".join(part_label(n, p) for n, p in autograder.parts.items())
    return {"title": f"Class report: {source.name}", "entries": entries, "students": students,
            "mistake_rows": mistake_rows, "mistakes": mistakes, "problems": problems,
            "subtitle": f"{len(students)} submissions graded by the autograder ({parts}) on the hidden set.",
            "footer": "Made by tools/grade_class.py. 'Need a look' lists timeouts, crashes, files that could not be "
                      "imported or were missing, grader faults, and code a solution never needs (flagged for a "
                      "human to read: it changes no grade)."}
