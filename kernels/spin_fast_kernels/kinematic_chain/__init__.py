"""kinematic_chain op."""
