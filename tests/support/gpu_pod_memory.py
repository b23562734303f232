"""Part 4 of BENCHMARKS-GPU.md read back (what loadtest/bench/pod_memory.render wrote), for the test
that holds the GPU overlay's memory against it (tests/deploy/test_k8s.py)."""
from __future__ import annotations

import re

SECTION = "## 4. Host memory of the GPU pod's server"
_MEASURED = re.compile(r"CPU limit (?P<cpus>[\d.]+) -> (?P<per_model>\d+) workers per model .*?"
                       r"\| workers \| (?P<workers>\d+) \| [\d,]+ \| [\d,]+ \| (?P<workers_pss>[\d,]+) \|.*?"
                       r"\| \*\*all\*\* \| \d+ \| \| \| \*\*(?P<total_pss>[\d,]+)\*\* \|", re.S)


def read_measured(markdown: str) -> dict | None:
    """Part 4's figures in MiB; None when the file holds no measurement (no GPU run yet, or the part failed)."""
    section = markdown.split(SECTION, 1)
    match = _MEASURED.search(section[1]) if len(section) == 2 else None
    if not match:
        return None
    number = {k: float(v.replace(",", "")) for k, v in match.groupdict().items()}
    return {"pod_cpus": number["cpus"], "workers_per_model": int(number["per_model"]),
            "workers": int(number["workers"]), "workers_pss_mib": number["workers_pss"],
            "total_pss_mib": number["total_pss"]}
