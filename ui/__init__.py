"""The Gradio app's presentation beside app.py: settings and start-up (settings), what users send (inputs), what
they see (results) and the gallery files handed to Gradio (files). Plain Python, no gradio import: the
tests and the latency bench run exactly what the app's callbacks run."""
