"""Streamlit dashboard over run folders."""
