"""The Gradio app's workings beside app.py (which holds only its layout and events). Plain Python, no gradio
import, so that the tests and the latency bench run exactly what the app's callbacks run: settings and start-up
(settings), what users send (inputs), a search and the API's JSON (results), what a session keeps (session), the
cards' words (cards), an opened result (details) and its chart (chart), the gallery files handed to Gradio
(files). On gradio: the app's components (components), what its events run (callbacks), and its server (server)."""
