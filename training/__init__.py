"""The laboratory: training, evaluation with the standard protocols, and the studies behind the recipe.

The serving core (`mga`) never imports this package, and a Space does not carry it. Evaluation ranks with the
serving core's own pipeline (`training.evaluate.Shop`), so the numbers it reports are the app's.
"""
