"""One look for the whole app: Fusion style, a calm light palette, a few style-sheet touches."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from lora_studio.paths import resource

ACCENT = "#3b6fd8"
ACCENT_2 = "#7a3fc4"
LOSS_RAW = (120, 150, 220, 110)
LOSS_SMOOTH = "#3b6fd8"
LR_PEN = "#c46a1f"
NAN_BRUSH = "#d0342c"
OK = "#2e8b57"
WARN = "#c98a00"
BAD = "#d0342c"

STYLE_SHEET = f"""
QGroupBox {{ font-weight: 600; border: 1px solid #cfd4dc; border-radius: 6px; margin-top: 14px;
            padding: 10px 8px 8px 8px; background: #fbfbfd; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; color: #2b3340; }}
QTabWidget::pane {{ border: 1px solid #cfd4dc; border-radius: 4px; top: -1px; background: #f4f5f8; }}
QTabBar::tab {{ padding: 7px 22px; margin-right: 2px; border: 1px solid #cfd4dc; border-bottom: none;
               border-top-left-radius: 5px; border-top-right-radius: 5px; background: #e6e9ef; }}
QTabBar::tab:selected {{ background: #f4f5f8; font-weight: 600; color: {ACCENT}; }}
QPushButton {{ padding: 5px 14px; }}
QPushButton#primary {{ background: {ACCENT}; color: white; border: 1px solid #2f5cb8; border-radius: 4px;
                      font-weight: 600; padding: 6px 18px; }}
QPushButton#primary:disabled {{ background: #9fb3dd; border-color: #9fb3dd; }}
QPushButton#danger {{ color: {BAD}; }}
QProgressBar {{ border: 1px solid #b9c0cc; border-radius: 4px; text-align: center; height: 18px; background: white; }}
QProgressBar::chunk {{ background: qlineargradient(x1:0, y1:0, x2:1, y2:0, stop:0 {ACCENT}, stop:1 {ACCENT_2});
                      border-radius: 3px; }}
QPlainTextEdit#log {{ font-family: monospace; font-size: 9pt; background: #1e2129; color: #d8dde6;
                     border-radius: 4px; }}
QLabel#hint {{ color: #5b6473; }}
QLabel#big {{ font-size: 11pt; font-weight: 600; }}
QToolButton#section {{ border: none; font-weight: 600; color: #2b3340; }}
QStatusBar QLabel {{ padding: 0 6px; }}
"""


def app_icon() -> QIcon:
    icon = QIcon()
    for name in ("lora-studio.svg", "lora-studio.png"):
        path = resource("icons", name)
        if path.exists():
            icon.addFile(str(path))
    return icon


def apply(app: QApplication) -> None:
    app.setStyle("Fusion")
    pal = QPalette()
    pal.setColor(QPalette.Window, QColor("#eef0f4"))
    pal.setColor(QPalette.WindowText, QColor("#1f2530"))
    pal.setColor(QPalette.Base, QColor("#ffffff"))
    pal.setColor(QPalette.AlternateBase, QColor("#f3f5f9"))
    pal.setColor(QPalette.ToolTipBase, QColor("#fffbe6"))
    pal.setColor(QPalette.ToolTipText, QColor("#1f2530"))
    pal.setColor(QPalette.Text, QColor("#1f2530"))
    pal.setColor(QPalette.Button, QColor("#e8ebf0"))
    pal.setColor(QPalette.ButtonText, QColor("#1f2530"))
    pal.setColor(QPalette.Highlight, QColor(ACCENT))
    pal.setColor(QPalette.HighlightedText, QColor("#ffffff"))
    pal.setColor(QPalette.Link, QColor(ACCENT))
    pal.setColor(QPalette.PlaceholderText, QColor("#8a93a3"))
    for role in (QPalette.Text, QPalette.WindowText, QPalette.ButtonText):
        pal.setColor(QPalette.Disabled, role, QColor("#9aa1ad"))
    app.setPalette(pal)
    font = QFont(app.font())
    if font.pointSizeF() < 9.5:
        font.setPointSizeF(9.5)
    app.setFont(font)
    app.setStyleSheet(STYLE_SHEET)
    app.setWindowIcon(app_icon())
