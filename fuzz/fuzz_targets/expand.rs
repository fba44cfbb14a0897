//! Fuzz the shell-word expander (BuildKit's lexer rules) with both escape characters and
//! every option combination: any input must expand or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_frontend::shell::{EnvList, Lexer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (flags, word) = match text.char_indices().nth(1) {
        Some((i, _)) => (text.as_bytes()[0], &text[i..]),
        None => return,
    };
    let env = EnvList(vec!["PWD=/home".into(), "SHELL=bash".into(), "EMPTY=".into(), "KOREAN=한국어".into(), "A=a b  c".into()]);
    let lexer = Lexer {
        raw_quotes: flags & 1 != 0,
        raw_escapes: flags & 2 != 0,
        skip_unset_env: flags & 4 != 0,
        skip_process_quotes: flags & 8 != 0,
        ..Lexer::new(if flags & 16 != 0 { '`' } else { '\\' })
    };
    let _ = lexer.process_word(word, &env);
    let _ = lexer.process_words(word, &env);
});
