from lora_studio.cli import entry

entry()
