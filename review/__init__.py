"""The review station: a web app where radiologists confirm or correct AI results.

Server-rendered (Starlette and Jinja2, no script or style from outside the package); its verdicts
become labels through the same code as `kidneyct label`, so the trainer picks them up.
"""
