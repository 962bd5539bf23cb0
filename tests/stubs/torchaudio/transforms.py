"""Empty: encodec only touches torchaudio.transforms when building its discriminator."""
