"""Things that judge: verifiers, answer extraction, the sandbox, the critic."""
