"""The TensorBoard plugin: routes that answer JSON about the runs under the logdir, and the page that draws it
(static/index.js, an ES module TensorBoard loads into an iframe). Installed with the package through the
`tensorboard_plugins` entry point; active when the logdir holds a diagnose run (a metrics.json)."""

import mimetypes
import threading
from pathlib import Path
from typing import Any

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import Request, Response, exceptions

from diagnose.files import METRICS_FILE

STATIC = Path(__file__).parent / "static"


class DiagnosePlugin(base_plugin.TBPlugin):
    plugin_name = "diagnose"

    def __init__(self, context: base_plugin.TBContext):
        self.data_provider = context.data_provider
        self.logdir = Path(context.logdir) if context.logdir else None
        self._active = False
        self._scanner = None  # made at the first request: importing what it reads is left out of TensorBoard's start
        self._lock = threading.Lock()

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="diagnose",
                                            disable_reload=True)

    def get_plugin_apps(self) -> dict[str, Any]:
        return {"/static/*": self._static, "/targets": self._targets, "/findings": self._findings,
                "/depth": self._depth, "/batch": self._batch, "/steps": self._steps}

    def is_active(self) -> bool:
        """A metrics.json anywhere under the logdir (looked for until one is found: runs appear as they start)."""
        if not self._active and self.logdir is not None and self.logdir.is_dir():
            self._active = next(self.logdir.rglob(METRICS_FILE), None) is not None
        return self._active

    @Request.application
    def _static(self, request: Request) -> Response:
        name = request.path.rsplit("/static/", 1)[-1]
        path = (STATIC / name).resolve()
        if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
            raise exceptions.NotFound()
        kind = "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0] or "text/plain"
        return http_util.Respond(request, path.read_bytes(), kind)

    @Request.application
    def _targets(self, request: Request) -> Response:
        from diagnose.tab.targets import label

        found = self._scan()
        return self._json(request, {"default": found.default, "targets": [
            {"id": t.id, "kind": t.kind, "label": label(t), "sweep": t.sweep} for t in found.targets.values()]})

    @Request.application
    def _findings(self, request: Request) -> Response:
        from diagnose.tab.findings import findings_view

        return self._json(request, findings_view(self._target(request)))

    @Request.application
    def _depth(self, request: Request) -> Response:
        from diagnose.tab.depth import depth_view

        return self._json(request, depth_view(self._target(request), self._events(request)))

    @Request.application
    def _batch(self, request: Request) -> Response:
        from diagnose.tab.batch import batch_charts

        return self._json(request, batch_charts(self._target(request)))

    @Request.application
    def _steps(self, request: Request) -> Response:
        from diagnose.tab.steps import steps_charts

        return self._json(request, steps_charts(self._target(request), self._events(request)))

    def _scan(self) -> Any:
        from diagnose.tab.targets import Scan, Scanner

        if self.logdir is None:
            return Scan({}, None)
        with self._lock:
            self._scanner = self._scanner or Scanner(self.logdir)
        return self._scanner()

    def _target(self, request: Request) -> Any:
        wanted = request.args.get("target", "")
        target = self._scan().targets.get(wanted)
        if target is None:
            raise exceptions.NotFound(f"no run, probe or sweep {wanted!r} under the logdir")
        return target

    def _events(self, request: Request) -> Any:
        from diagnose.tab.events import Events

        return Events(self.data_provider, plugin_util.context(request.environ),
                      plugin_util.experiment_id(request.environ))

    def _json(self, request: Request, value: Any) -> Response:
        from diagnose.tab.charts import as_json

        return http_util.Respond(request, as_json(value), "application/json")
