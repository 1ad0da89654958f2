"""The ground floor: errors, atomic files, field docs, port and server helpers.

Nothing here imports any other part of Streambed.
"""
