"""deskq's mail layer: sources (IMAP, Maildir), parsing, threading, replies, sending."""
