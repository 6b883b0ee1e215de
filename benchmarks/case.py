"""One case in its own interpreter: ``python -c "...main(sys.argv)" SPEC RESULT``.

SPEC is JSON (workload, peer, variant, repeat, budget, timeout, params); the rows go to the
file RESULT, rewritten after every change. The runner starts this; it is not for people.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from . import harness, peers
from .workloads import WORKLOADS, Case, CaseFailure
from .workloads.base import describe_exc

#: seconds the interpreter's own exit (atexit handlers, joins) may take
EXIT_GRACE = 20


def _close_rows(record: harness.CaseRecord, variant: str, label: str, **fields: Any) -> None:
    """Sets ``fields`` on every row not yet finished (one row if there is none)."""
    open_rows = [r for r in record.rows if r.get("status") == "running"]
    if not record.rows:
        open_rows = [record.row(variant, label=label)]
    for row in open_rows:
        record.update(row, **fields)


def run(spec: dict[str, Any], record: harness.CaseRecord) -> None:
    wl = WORKLOADS[spec["workload"]]
    peer = peers.get(spec["peer"])
    variant = spec["variant"]
    try:
        peer.load()
    except peers.Unavailable as exc:
        record.row(variant, status="n/a", reason=str(exc), label=peer.label())
        return
    case = Case(wl, peer, variant, spec["repeat"], spec["budget"], spec["params"], record)

    def on_hang() -> None:
        _close_rows(
            record,
            variant,
            peer.label(),
            status="hang",
            reason=f"case still running after {spec['timeout'] - 5:g} s",
        )

    with harness.Watchdog(spec["timeout"] - 5, on_hang):
        try:
            wl.run(case)
        except (peers.Unavailable, peers.NotSupported) as exc:
            _close_rows(record, variant, peer.label(), status="n/a", reason=str(exc))
        except CaseFailure as exc:
            _close_rows(record, variant, peer.label(), status="fail", reason=str(exc))
        except Exception as exc:
            _close_rows(
                record,
                variant,
                peer.label(),
                status="fail",
                reason=describe_exc(exc),
                traceback=traceback.format_exc()[-2000:],
            )
        finally:
            try:
                peer.shutdown()
            except Exception:
                pass
    for row in list(record.rows):
        record.update(row, version=peer.version(), serializer=peer.serializer)
    _close_rows(record, variant, peer.label(), status="fail", reason="not measured")


def main(argv: list[str]) -> int:
    spec, result_path = json.loads(argv[1]), argv[2]
    record = harness.CaseRecord(result_path)
    run(spec, record)
    # Interpreter exit runs the libraries' atexit handlers; they must not hang the case.
    harness.Watchdog(EXIT_GRACE, lambda: None).__enter__()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
