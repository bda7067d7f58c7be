"""Audio bytes in, transcript out (Vosk, PyAV). Filled in by the voicemail issue."""
