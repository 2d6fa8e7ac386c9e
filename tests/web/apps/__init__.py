"""Small applications the real-server tests run, one per framework, all with the same routes."""
