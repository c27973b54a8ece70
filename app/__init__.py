"""Streamlit app of the dermoscopy interpretability review tool (research and teaching only)."""
