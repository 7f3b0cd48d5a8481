import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Training runs keep encoded pictures on disk (core/training/disk_cache.py): not in the user's cache folder.
if "LORA_STUDIO_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["LORA_STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="lora-studio-test-cache-")
