"""The asset graph as text: what a reviewer should see change when the graph changes.

`streamflow graph` prints it; the tests compare it with docs/asset_graph.txt, so a change to keys,
groups, dependencies, partition mappings, checks or automation shows up in the diff of a review.
"""

from __future__ import annotations

import dagster as dg


def _mapping(dep: dg.AssetDep) -> str:
    mapping = dep.partition_mapping
    if mapping is None:
        return "same month"
    if isinstance(mapping, dg.TimeWindowPartitionMapping):
        return f"months {mapping.start_offset:+d}..{mapping.end_offset:+d}" + (
            ", missing allowed" if mapping.allow_nonexistent_upstream_partitions else ""
        )
    return type(mapping).__name__


def graph_text(defs: dg.Definitions) -> str:
    """Every asset with its group, partitions, dependencies (and how months map), checks and
    automation; then the jobs, schedules and sensors."""
    checks: dict[dg.AssetKey, list[dg.AssetCheckSpec]] = {}
    for assets in [*(defs.assets or []), *(defs.asset_checks or [])]:
        for check in getattr(assets, "check_specs", []):
            checks.setdefault(check.asset_key, []).append(check)
    lines = []
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        partitions = type(spec.partitions_def).__name__ if spec.partitions_def else "unpartitioned"
        lines.append(f"{spec.key.to_user_string()}  [group {spec.group_name}; {partitions}]")
        for dep in sorted(spec.deps, key=lambda d: d.asset_key.to_user_string()):
            lines.append(f"  <- {dep.asset_key.to_user_string()} ({_mapping(dep)})")
        for check in sorted(checks.get(spec.key, []), key=lambda c: c.name):
            lines.append(f"  check {check.name} ({'blocking' if check.blocking else 'warning'})")
        if spec.automation_condition is not None:
            lines.append(f"  automation {spec.automation_condition.get_label() or 'custom'}")
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    lines.append(f"jobs: {', '.join(jobs)}")
    lines.append(f"schedules: {', '.join(sorted(s.name for s in defs.schedules or []))}")
    lines.append(f"sensors: {', '.join(sorted(s.name for s in defs.sensors or []))}")
    return "\n".join(lines) + "\n"
