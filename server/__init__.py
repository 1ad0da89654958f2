"""The DASH origin: content building (`build`), MPDs (`mpd`), the HTTP app (`app`), the CLI."""
