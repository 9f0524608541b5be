"""deskq's store: the data model, migrations, configuration and domain services.

Nothing here imports textual, imapclient or the ``mail``/``tui`` packages.
"""
