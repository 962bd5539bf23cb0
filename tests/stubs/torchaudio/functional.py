"""Empty: encodec resamples with torchaudio.functional only in convert_audio, which tests do not call."""
