"""Tests of the web layer: middleware, finish_request, framework glue, real servers."""
