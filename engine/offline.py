"""Settings that keep libraries off the network (these machines reach package registries
only). Applied by the CLI, by every Ray worker (inherited from the environment a local Ray
is started with, or through ``runtime_env`` on a cluster joined by address) and by tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CACHE_DIR = Path(os.environ.get("FLD_CACHE_DIR", Path.home() / ".cache" / "fld-engine"))

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # otherwise a missing hub model retries for minutes
    "TRANSFORMERS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "YOLO_VERBOSE": "False",
    "YOLO_CONFIG_DIR": str(CACHE_DIR / "ultralytics"),
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no "Loading weights" bars from every worker
    "TRANSFORMERS_VERBOSITY": "error",
}


def apply_offline_env() -> dict[str, str]:
    """Set the offline variables in this process (keeping any the user set) and return them."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in OFFLINE_ENV}


def prepare_ultralytics() -> None:
    """Give ultralytics a config folder holding ``Arial.ttf``, which its plotting and
    training otherwise try to download. Any TTF will do: we copy matplotlib's DejaVu Sans."""
    apply_offline_env()
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    target = font_dir / "Arial.ttf"
    if target.exists():
        return
    font_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    temporary = target.with_suffix(f".tmp{os.getpid()}")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    # Newer ultralytics looks for the font in the config dir itself as well.
    if not (font_dir.parent / "Arial.ttf").exists():
        shutil.copyfile(target, font_dir.parent / "Arial.ttf")
