"""The runtime's main script, as Lambda's /var/runtime/bootstrap.py: what an
AWS_LAMBDA_EXEC_WRAPPER script is given to run (`exec "$@"`)."""

if __name__ == "__main__":
    from lambda_runtime_lamina.runtime import main

    main()
