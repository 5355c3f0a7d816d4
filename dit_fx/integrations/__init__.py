"""Integrations: every change dit_fx makes to a user's objects, behind one installer per object."""
