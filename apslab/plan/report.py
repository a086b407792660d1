"""``apslab report``: the capacity-planning notebook, run for a scenario, as one HTML file.

papermill executes ``notebooks/06_capacity_planning.ipynb`` with the scenario (and trace, SLOs,
GPU counts, target) injected after its ``parameters`` cell; nbconvert renders the executed
notebook with JupyterLab's look. The HTML is self-contained: figures are embedded as base64
PNGs, the stylesheet is inline, and the template drops the scripts the lab template would load
from a CDN (require.js, MathJax, mermaid, the widget manager), so the file opens offline and
can be mailed or archived as it is. Widgets are kept as their text form: a report is a record,
not an app.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.errors import InputError

NOTEBOOK_NAME = "06_capacity_planning.ipynb"
NOTEBOOK_DEFAULT_GPUS = "1..2"  # the notebook's own default (a test keeps them equal)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "[an interactive widget: open the notebook in JupyterLab to use it]"

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


class ReportFailed(RuntimeError):
    """The notebook raised while papermill ran it (not an input problem)."""


def default_notebook() -> Path:
    """notebooks/06_capacity_planning.ipynb of the checkout this package is installed from."""
    return Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK_NAME


def report_parameters(scenario: str | Path, *, trace: str | Path | None = None,
                      trace_format: str = "apslab", tenant_weights: str | None = None,
                      tenant_seed: int = 0, slos: Sequence[str] | None = None,
                      gpus: str | None = None, target_rps: float | None = None,
                      trace_span: float | None = None, gpu_types: str | None = None,
                      goodput: str | None = None, min_attainment: float | None = None
                      ) -> dict[str, Any]:
    """Check the inputs now (a bad one is an InputError before any kernel starts) and return
    the notebook parameters.

    Omitted GPU counts keep the notebook's default. The criteria (SLOs, goodput targets,
    minimum attainment) travel together: give any of them and the others are empty unless
    given; give none and the notebook's own criteria apply. An omitted target means no
    recommendation, omitted GPU types mean the scenario's own GPU, an omitted span the whole
    trace (the notebook's defaults fit its own study, not every scenario); without a trace the
    scenario's [workload] is generated."""
    from ..io.arguments import parse_goodput
    from .search import (
        check_slo_paths,
        parse_gpu_counts,
        parse_slo,
        probe_metrics,
        slos_with_attainment,
    )
    from .study import gpu_type_scenarios, load_inputs

    loaded, loaded_trace = load_inputs(scenario, trace, trace_format, tenant_weights or "",
                                       tenant_seed, trace_span)
    parameters: dict[str, Any] = {
        "scenario_path": str(Path(scenario).resolve()),
        "trace_path": str(Path(trace).resolve()) if trace else "",
        "trace_format": trace_format,
        "tenant_weights": tenant_weights or "",
        "tenant_seed": tenant_seed,
        "trace_span": None if trace_span is None else float(trace_span),
        "gpu_types": gpu_types or "",
    }
    types = gpu_type_scenarios(loaded, gpu_types or "")
    counts = parse_gpu_counts(gpus if gpus is not None else NOTEBOOK_DEFAULT_GPUS)
    if gpus is not None:
        parameters["gpus"] = gpus
    if slos or goodput or min_attainment is not None:
        targets = parse_goodput(goodput or None)
        checked = slos_with_attainment([parse_slo(text) for text in slos or []],
                                       min_attainment, targets)
        check_slo_paths(checked, probe_metrics(next(iter(types.values())), loaded_trace,
                                               max(counts), goodput=targets))
        parameters.update({"slos": list(slos or []), "goodput": goodput or "",
                           "min_attainment": min_attainment})
    parameters["target_rps"] = None if target_rps is None else float(target_rps)
    return parameters


def render_report(parameters: dict[str, Any], out: str | Path, *,
                  notebook: str | Path | None = None, keep_notebook: str | Path | None = None,
                  timeout_s: int = 600) -> Path:
    """Execute the notebook with ``parameters`` and write self-contained HTML to ``out``."""
    notebook = Path(notebook) if notebook else default_notebook()
    if not notebook.is_file():
        raise InputError(f"{notebook}: report notebook not found (run apslab report from a "
                         "checkout of the repository, or pass --notebook)")
    import nbformat
    import papermill
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="apslab-report-") as tmp:
        executed = Path(tmp) / notebook.name
        # papermill infers the notebook's parameters to warn about unknown ones, and its parser
        # gives up on lines with more than one "=" (the SLOs' "<=", "a=1,b=2" weights), so it
        # would warn about parameters that exist; tests check the names against the cell instead.
        logging.getLogger("papermill").setLevel(logging.ERROR)
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=parameters, kernel_name="python3",
                cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout_s,
                report_mode=False)
        except papermill.PapermillExecutionError as exc:
            if exc.ename == "InputError":
                raise InputError(exc.evalue) from None
            first_line = (exc.source or "").strip().splitlines()[:1] or [""]
            raise ReportFailed(f"{notebook.name} failed in the cell starting "
                               f"{first_line[0][:60]!r}: {exc.ename}: {exc.evalue}") from None
        nb = nbformat.read(executed, as_version=4)
        if keep_notebook:
            from ..io.trace import write_text_atomic

            write_text_atomic(keep_notebook, nbformat.writes(nb))
        html = notebook_html(nb, Path(tmp))
    from ..io.trace import write_text_atomic

    write_text_atomic(out, html)
    return out


def notebook_html(nb, workdir: Path) -> str:
    """Self-contained HTML for an executed notebook (see the module docstring)."""
    from nbconvert import HTMLExporter

    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                # its text form is the widget's state when first shown (a progress bar at 0%)
                output["data"] = {"text/plain": WIDGET_NOTE}
    template = workdir / "apslab_report.html.j2"
    template.write_text(_TEMPLATE, encoding="utf-8")
    exporter = HTMLExporter(template_name="lab", template_file=str(template),
                            extra_template_basedirs=[str(workdir)])
    exporter.embed_images = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {
        "name": "apslab capacity-planning report"}})
    return body
