"""The hosting dashboard: Django project for customers, plans, nodes and VEs.

Only the project shell exists so far; the domain apps arrive with the
dashboard issue (see ../shared/DESIGN.md).
"""
