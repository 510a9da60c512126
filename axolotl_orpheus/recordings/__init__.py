"""From recordings to a dataset: `segment` cuts long recordings into clips, `init` surveys a dataset and writes
its config, `check-transcripts` finds rows whose text the audio does not say."""
