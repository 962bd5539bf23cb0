"""``rvqkit eval``: objective quality of the codec per bandwidth and per codebook count, against Opus
and MP3 at the same bitrates (see docs/eval.md)."""
