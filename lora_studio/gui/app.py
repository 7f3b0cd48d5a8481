"""Start the app, or render one tab offscreen to a PNG (for the README and tests)."""

from __future__ import annotations

import os
import sys
import time

from PySide6.QtCore import QCoreApplication, QElapsedTimer, QEventLoop, QSettings
from PySide6.QtWidgets import QApplication


def application(argv: list[str] | None = None) -> QApplication:
    from lora_studio.gui import theme

    app = QApplication.instance()
    if app is None:
        QCoreApplication.setOrganizationName("LoRA Studio")
        QCoreApplication.setApplicationName("LoRA Studio")
        app = QApplication(argv or [sys.argv[0]])
        theme.apply(app)
    return app


def wait_until(condition, timeout_s: float, app: QApplication | None = None) -> bool:
    """Run the event loop until ``condition()`` holds or the time is up."""
    app = app or QApplication.instance()
    timer = QElapsedTimer()
    timer.start()
    while not condition():
        if timer.elapsed() > timeout_s * 1000:
            return False
        app.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)
    return True


def run(args) -> int:
    if args.screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = application()
    from lora_studio.gui.main_window import TABS, MainWindow

    settings = None
    if args.screenshot:  # a screenshot never reads or changes the user's settings
        import tempfile

        settings = QSettings(os.path.join(tempfile.mkdtemp(prefix="lora-studio-shot-"), "settings.ini"),
                             QSettings.IniFormat)
    window = MainWindow(settings=settings, first_run=True if args.screenshot else None)
    if args.dataset:
        window.open_dataset(args.dataset)
    if args.config:
        window.open_config(args.config)
    if args.model:
        window.training_tab.model_picker.set_model(args.model)
        window.preview_tab.model_picker.set_model(args.model)
    if args.run:
        window.open_run(args.run)
    for spec in args.lora or []:
        path, _, weight = spec.rpartition(":") if spec.rpartition(":")[2].replace(".", "", 1).lstrip("-").isdigit() \
            else (spec, "", "1")
        window.preview_tab.add_lora(path, float(weight or 1))
    if args.prompt:
        window.preview_tab.prompt.setPlainText(args.prompt)
    window.tabs.setCurrentIndex(TABS[args.tab])
    window.show()
    if not args.screenshot:
        return app.exec()
    return screenshot(window, args, app)


def screenshot(window, args, app) -> int:
    # wait for what the chosen tab shows: the dataset scan and thumbnails, the GPU probe, a preview image
    wait_until(lambda: window.system_probe is None or window.system_probe.isFinished(), 120, app)
    ds = window.dataset_tab
    wait_until(lambda: ds.job is None or ds.job.isFinished(), 60, app)
    rows = ds.model.rowCount()
    wait_until(lambda: ds.model.thumbnails_ready() >= min(rows, 10), 20, app)
    if args.tab == "dataset" and rows:
        ds.table.selectRow(0)
    if args.tab == "preview":
        tab = window.preview_tab
        wanted = [r.weight() for r in tab.rows]
        # the history strip shows the way there: the base model alone, each LoRA alone, then the blend
        steps = [[0.0] * len(wanted)] if wanted else []
        if len(wanted) > 1:
            steps += [[w if j == i else 0.0 for j, w in enumerate(wanted)] for i in range(len(wanted))]
        steps.append(wanted)
        for k, weights in enumerate(steps):
            for row, w in zip(tab.rows, weights):
                row.set_weight(w)
            tab.generate()
            wait_until(lambda k=k: tab.images_made >= k + 1, args.timeout, app)
    wait_until(lambda: False, 0.5, app)  # let layouts and plots settle
    samples = window.training_tab.samples
    if samples.count():
        samples.scrollToItem(samples.item(samples.count() - 1))
    window.training_tab.plot.redraw()
    app.processEvents()
    pix = window.grab()
    from lora_studio.gui.widgets.image_view import save_png

    out = os.path.abspath(args.screenshot)
    try:
        save_png(pix, out)
        ok = True
    except OSError:
        ok = False
    print(f"{'wrote' if ok else 'could not write'} {out} ({pix.width()}x{pix.height()})")
    window.preview_tab.shutdown()
    window.dataset_tab.shutdown()
    window.close()
    return 0 if ok else 1
