using SparseTune.Cli;

// sparsetune: every failure is a non-zero exit and one line on stderr; --verbose adds the stack trace.
return SparseTuneCli.Run(args);
