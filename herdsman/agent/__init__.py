"""The agent: the control plane that keeps what runs equal to what was released."""
