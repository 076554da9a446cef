"""The base-model catalogue: registered, hashed pretrained folders that models fine-tune."""
