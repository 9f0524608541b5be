"""deskq's terminal side: the command line and the Textual app (imported lazily)."""
