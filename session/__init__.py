"""A serverless session service for Google Cloud Functions, on Firestore."""
