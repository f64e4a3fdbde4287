"""``python -m gradience_hub`` runs the CLI."""

from gradience_hub.cli import main

if __name__ == "__main__":
    main()
