"""Run one generated module's tests with unittest; one JSON line per event.

    python driver.py BUILD_DIR MODULE RESULTS.jsonl [--skip IDS_FILE] [--test-timeout S]

Events: ``{"start": id}`` before a test, ``{"id", "outcome", "detail"}`` after it
(outcome: pass, fail, error, skip, xfail, xpass). Written and flushed as they happen, so
the runner knows which test was running if this process dies or hangs. A test that runs
longer than --test-timeout makes faulthandler dump every thread's stack and exit
(regrtest's --timeout); the runner records it and starts a new process for the rest.

Run as a script (not ``-m``): spawn and forkserver children import ``__main__`` again as
``__mp_main__``, which does nothing here.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import time
import unittest


def _short_id(test: unittest.TestCase) -> str:
    test_id = test.id()
    if isinstance(test, unittest.case._SubTest):
        test_id = test.test_case.id()
    # "module.Class.test" -> "Class.test"; "setUpClass (module.Class)" stays readable.
    if " (" in test_id:
        what, where = test_id.split(" (", 1)
        return f"{where.rstrip(')').split('.', 1)[-1]}.{what}"
    return test_id.split(".", 1)[1] if "." in test_id else test_id


class JsonResult(unittest.TextTestResult):
    events = None
    timeout = 0.0

    def _write(self, record: dict) -> None:
        self.events.write(json.dumps(record) + "\n")
        self.events.flush()

    def startTest(self, test):
        self._t0 = time.monotonic()
        self._write({"start": _short_id(test)})
        if self.timeout:
            faulthandler.dump_traceback_later(self.timeout, exit=True)
        super().startTest(test)

    def stopTest(self, test):
        if self.timeout:
            faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

    def _outcome(self, test, outcome: str, detail: str = "") -> None:
        self._write(
            {
                "id": _short_id(test),
                "outcome": outcome,
                "detail": detail,
                "time": round(time.monotonic() - getattr(self, "_t0", time.monotonic()), 3),
            }
        )

    def addSuccess(self, test):
        super().addSuccess(test)
        self._outcome(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._outcome(test, "fail", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._outcome(test, "error", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._outcome(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._outcome(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._outcome(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            pairs = self.failures if failed else self.errors
            self._outcome(subtest, "fail" if failed else "error", f"{subtest.id()}\n{pairs[-1][1]}")


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("build_dir")
    parser.add_argument("module")
    parser.add_argument("results")
    parser.add_argument("--skip", help="file with test ids (Class.test) not to run")
    parser.add_argument("--test-timeout", type=float, default=0.0)
    parser.add_argument(
        "-k",
        dest="only",
        action="append",
        default=[],
        help="run only the test ids containing this (repeatable)",
    )
    args = parser.parse_args()

    sys.path.insert(0, args.build_dir)
    skip = set()
    if args.skip:
        with open(args.skip, encoding="utf-8") as f:
            skip = {line.strip() for line in f if line.strip()}
    loader = unittest.TestLoader()
    tests = [
        t
        for t in _flatten(loader.loadTestsFromName(args.module))
        if _short_id(t) not in skip and (not args.only or any(k in _short_id(t) for k in args.only))
    ]
    with open(args.results, "a", encoding="utf-8") as events:
        JsonResult.events = events
        JsonResult.timeout = args.test_timeout
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=JsonResult)
        runner.run(unittest.TestSuite(tests))
        events.write(json.dumps({"done": True}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
