"""Export of trained models to model packages (``.tflite`` + ``manifest.json``) and their publication."""
