"""``python -m gradience_hub.scan ARGS`` runs ``gradience-hub scan ARGS``."""

from gradience_hub.scan.cli import main

if __name__ == "__main__":
    main()
