"""The certification report: certificate.json, junit.xml and report.html.

``certify`` builds the certificate (a :class:`harness.records.Certificate`) and hands it to
:func:`write_report`. Everything here reads finished run directories only (through
:func:`harness.history.load_run`); nothing runs a process or opens a socket, so a report can be
rebuilt from stored runs at any time.

Modules: :mod:`.junit` (the JUnit XML), :mod:`.plots` (timelines and the failover-gap histogram),
:mod:`.html` (the page; its stylesheet is the package data file ``report.css``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.records import Certificate, write_atomic, write_json

from .html import render_html
from .junit import junit_xml
from .plots import failover_gaps, gap_histogram_png, timeline_png

CERTIFICATE_FILE = "certificate.json"
JUNIT_FILE = "junit.xml"
HTML_FILE = "report.html"

CertificateLike = Certificate | Mapping[str, Any]


def _certificate(certificate: CertificateLike) -> Certificate:
    # A certificate read back from certificate.json (or written by hand) is JSON from elsewhere:
    # it is read once, tolerantly, here; every writer below sees only the typed record.
    return certificate if isinstance(certificate, Certificate) else Certificate.from_json(certificate)


def write_report(report_dir: Path, certificate: CertificateLike) -> dict[str, Path]:
    """Writes certificate.json, junit.xml and report.html into ``report_dir`` (created if needed)."""
    cert = _certificate(certificate)
    report_dir = Path(report_dir)
    return {
        "certificate": write_certificate(report_dir, cert),
        "junit": write_junit(report_dir, cert),
        "html": write_html(report_dir, cert),
    }


def write_certificate(report_dir: Path, certificate: CertificateLike) -> Path:
    """Writes the whole certificate: it is the machine-readable record, so nothing is trimmed."""
    return write_json(Path(report_dir) / CERTIFICATE_FILE, _certificate(certificate).to_json())


def write_junit(report_dir: Path, certificate: CertificateLike) -> Path:
    """One testsuite; one testcase per scenario and invariant, so CI shows exactly which check failed."""
    return write_atomic(Path(report_dir) / JUNIT_FILE, junit_xml(_certificate(certificate)))


def write_html(report_dir: Path, certificate: CertificateLike) -> Path:
    """The one page a person reads first. Self-contained: CSS inline, images as data: URIs."""
    return write_atomic(Path(report_dir) / HTML_FILE, render_html(_certificate(certificate)).encode("utf-8"))


__all__ = [
    "CERTIFICATE_FILE",
    "HTML_FILE",
    "JUNIT_FILE",
    "failover_gaps",
    "gap_histogram_png",
    "render_html",
    "timeline_png",
    "write_certificate",
    "write_html",
    "write_junit",
    "write_report",
]
