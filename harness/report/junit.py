"""junit.xml: one testsuite, one testcase per scenario and invariant."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from harness.records import FAIL, INCONCLUSIVE, INTERRUPTED, NOT_CHECKED, PASS, Certificate, clip, render_violations

SUITE_NAME = "wschaos certify"

# XML 1.0 forbids most control characters; evidence can carry them (torn log lines, raw frames),
# and ElementTree would write them anyway and produce a file no JUnit reader can parse.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_safe(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def junit_xml(cert: Certificate) -> bytes:
    invariants = cert.all_invariants()
    suite = ET.Element("testsuite", name=SUITE_NAME)
    props = ET.SubElement(suite, "properties")
    for key, prop in (
        ("verdict", cert.verdict),
        ("build_command", cert.command),
        ("profile", cert.profile),
        ("error", cert.error),
        ("first_failure_s", str(cert.extra["first_failure_s"]) if "first_failure_s" in cert.extra else None),
    ):
        if prop is not None:
            ET.SubElement(props, "property", name=key, value=xml_safe(prop))
    # Recovery figures (harness.recovery) as suite properties, one per scenario and figure:
    # "recovery.kill_primary.p99_recover_s". Figures that were not measured are left out.
    for scenario in cert.scenarios:
        if scenario.recovery is None:
            continue
        for figure, value in scenario.recovery.to_json().items():
            shown = ",".join(value) if isinstance(value, list) else value
            if shown is not None and shown != "":
                name = f"recovery.{scenario.name}.{figure}"
                ET.SubElement(props, "property", name=xml_safe(name), value=xml_safe(str(shown)))

    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for scenario in cert.scenarios:
        for invariant in invariants:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=xml_safe(scenario.name), name=xml_safe(invariant))
            result = scenario.results.get(invariant)
            status = result.status if result is not None else None
            if status == PASS and scenario.effective_outcome == INCONCLUSIVE:
                # A pass from a run that could not judge the build is not a pass (docs/verdicts.md).
                counts["skipped"] += 1
                why = "; ".join(scenario.reasons) or "no reason given"
                ET.SubElement(case, "skipped", message=xml_safe(clip(f"inconclusive: {why}", 1000)))
                continue
            if status == PASS:
                continue
            if result is not None and status == FAIL:
                counts["failures"] += 1
                first = result.violations[0].message if result.violations else None
                message = str(first or result.note or f"{invariant} violated")
                failure = ET.SubElement(case, "failure", message=xml_safe(clip(message, 500)), type=xml_safe(invariant))
                lines = [result.note] if result.note else []
                lines += render_violations(result.violations)
                if scenario.replay:
                    lines.append(f"replay: {scenario.replay}")
                failure.text = xml_safe("\n".join(lines))
            elif result is not None and status == NOT_CHECKED:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=xml_safe(f"not checked: {result.note or 'no reason given'}"))
            else:
                # A missing or unknown result is neither a pass nor a skip: the harness did not
                # judge it, which JUnit calls an error.
                counts["errors"] += 1
                what = "no result recorded" if result is None else f"unknown status {result.raw_status!r}"
                ET.SubElement(case, "error", message=xml_safe(what))

    # An errored certification (the build never started) has no testcases; say why in the suite.
    if cert.verdict == "error" and counts["tests"] == 0:
        counts["tests"] = counts["errors"] = 1
        case = ET.SubElement(suite, "testcase", classname="certify", name="build_starts")
        ET.SubElement(case, "error", message=xml_safe(cert.error or "certification error"))
    # An interrupted one did not finish, whatever its scenarios showed: CI must not read it as green.
    if cert.verdict == INTERRUPTED:
        counts["tests"] += 1
        counts["errors"] += 1
        case = ET.SubElement(suite, "testcase", classname="certify", name="certification_finishes")
        ET.SubElement(case, "error", message=xml_safe(cert.error or "interrupted"))

    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{cert.duration_s or 0.0:.3f}")
    if cert.started:
        suite.set("timestamp", xml_safe(cert.started))
    if cert.machine.get("hostname"):
        suite.set("hostname", xml_safe(str(cert.machine["hostname"])))

    root = ET.Element("testsuites", name=SUITE_NAME)
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, "0"))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
