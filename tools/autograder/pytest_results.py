"""A pytest plugin that writes every test's outcome and message to a JSON file.

    DIFFUSION_RESULTS_JSON=out.json python -m pytest -p pytest_results test_diffusion.py

Used by grade.py (the autograder) and by tools/make_handout.py's self-checks. For each test:
its name, whether it passed, its failure text, and `blame`: the functions that a failure of an
end-to-end test was traced to (set by test_diffusion.py, see its `_fail`).
"""

from __future__ import annotations

import json
import os

import pytest

_tests: dict[str, dict] = {}
_collection_errors: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    blame = getattr(call.excinfo.value, "blame", None) if call.excinfo is not None else None
    if blame:
        report.user_properties.append(("blame", list(blame)))


def pytest_runtest_logreport(report):
    test = _tests.setdefault(report.nodeid, {"name": report.nodeid.split("::")[-1], "outcome": "passed",
                                             "message": "", "blame": []})
    if report.outcome == "passed":
        return
    if test["outcome"] == "passed" or report.when == "call":
        test["outcome"] = report.outcome  # failed or skipped: either way not a pass
        test["message"] = report.longreprtext if report.outcome == "failed" else "skipped"
        test["blame"] = dict(report.user_properties).get("blame", [])


def pytest_collectreport(report):
    if report.failed:
        _collection_errors.append(report.longreprtext)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("DIFFUSION_RESULTS_JSON")
    if path:
        with open(path, "w") as f:
            json.dump({"tests": list(_tests.values()), "collection_errors": _collection_errors,
                       "exitstatus": int(exitstatus)}, f, indent=1)
