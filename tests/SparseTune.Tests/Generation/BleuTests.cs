using SparseTune.Generation;
using Xunit;

namespace SparseTune.Tests.Generation;

/// <summary>
/// Corpus BLEU against hand-counted n-grams. Each expected value was also checked with NLTK 3.8's
/// <c>corpus_bleu</c> (no smoothing) on the same whitespace tokens.
/// </summary>
public class BleuTests
{
    static BleuScore Whitespace(string[] hypotheses, string[][] references) =>
        Bleu.Corpus(hypotheses, references, BleuTokenizer.Whitespace);

    [Fact]
    public void PerfectMatch_Is100()
    {
        var score = Whitespace(["the cat sat on the mat"], [["the cat sat on the mat"]]);
        Assert.Equal(100, score.Score, 9);
        Assert.Equal([100.0, 100, 100, 100], score.Precisions);
        Assert.Equal(1, score.BrevityPenalty);
    }

    [Fact]
    public void NoFourGramMatch_IsZero_WhateverTheLowerOrders()
    {
        // Unigrams 5/6, bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat), 4-grams 0/3.
        var score = Whitespace(["the cat is on the mat"], [["the cat sat on the mat"]]);
        Assert.Equal(0, score.Score);
        Assert.Equal([5L, 3, 1, 0], score.Matches);
        Assert.Equal([6L, 5, 4, 3], score.Totals);
    }

    [Fact]
    public void ShortHypothesis_PaysTheBrevityPenaltyAgainstTheClosestReference()
    {
        // Every n-gram of the 5-token hypothesis is in the first reference (precisions all 1). The closest reference
        // length is 6 (|5-6| < |5-7|), so BP = exp(1 - 6/5) = exp(-0.2) and BLEU = 100·exp(-0.2) = 81.8730753…
        var score = Whitespace(["the cat sat on the"], [["the cat sat on the mat", "a cat sat on the mat today"]]);
        Assert.Equal(6, score.ReferenceLength);
        Assert.Equal(Math.Exp(-0.2), score.BrevityPenalty, 12);
        Assert.Equal(81.87307530779819, score.Score, 9);
    }

    [Fact]
    public void ClosestReferenceLength_TiesGoToTheShorter()
    {
        var score = Whitespace(["a b c d e f"], [["a b c d e f g h", "a b c d"]]); // |6-8| = |6-4|: r = 4
        Assert.Equal(4, score.ReferenceLength);
        Assert.Equal(1, score.BrevityPenalty);
    }

    [Fact]
    public void Corpus_SumsClippedCountsOverSentences_WithSeveralReferencesEach()
    {
        // Sentence 1 (6 tokens, closest ref 6): every n-gram is in ref "the cat sat on the mat today": 6/6 5/5 4/4 3/3.
        // Sentence 2 (7 tokens, closest ref 7): unigrams 7/7; bigrams 6/6; trigrams 4/5 ("dog in the" is in
        // neither reference); 4-grams 2/4 ("there is a dog", "is a dog in").
        // Corpus: 13/13, 11/11, 8/9, 5/7, BP 1 → BLEU = 100·(8/9 · 5/7)^¼ = 100·(40/63)^¼ = 89.2647227…
        var score = Whitespace(
            ["the cat sat on the mat", "there is a dog in the garden"],
            [["the cat sat on the mat today", "a cat was on the mat"], ["a dog is in the garden", "there is a dog in a garden"]]);
        Assert.Equal([13L, 11, 8, 5], score.Matches);
        Assert.Equal([13L, 11, 9, 7], score.Totals);
        Assert.Equal(100 * Math.Pow(40.0 / 63, 0.25), score.Score, 9);
        Assert.Equal(89.26472275706656, score.Score, 9);
    }

    [Fact]
    public void RepeatedWords_AreClippedByTheMostAnyOneReferenceHolds()
    {
        // "the" × 4 in the hypothesis; one reference has it twice, the other once → 2 unigram matches of 4.
        var score = Whitespace(["the the the the"], [["the cat the mat", "the dog"]]);
        Assert.Equal(2, score.Matches[0]);
        Assert.Equal(4, score.Totals[0]);
    }

    [Fact]
    public void Tokenizer13a_SplitsPunctuationButNotNumbersOrHyphenatedWords()
    {
        Assert.Equal(["The", "Eagle", "is", "a", "family-friendly", "coffee", "shop", "."],
            Bleu.Tokenize("The Eagle is a family-friendly coffee shop."));
        Assert.Equal(["Hello", ",", "world", "!", "It", "costs", "£20", "(", "cheap", ")", "and", "3.50", "or", "1,000", "."],
            Bleu.Tokenize("Hello, world! It costs £20 (cheap) and 3.50 or 1,000."));
        Assert.Equal(["rated", "5", "-", "star", "&", "\"", "good", "\""], Bleu.Tokenize("rated 5-star &amp; &quot;good&quot;"));
        Assert.Equal(["the", "eagle"], Bleu.Tokenize("The EAGLE", lowercase: true));
    }

    [Fact]
    public void Tokenization_ChangesTheScore_AsTheSameNumbersWithNltk()
    {
        // 13a splits off the period: hypothesis 8 tokens vs reference 7, precisions 7/8 6/7 5/6 4/5 → (1/2)^¼ = 84.0896…
        string[] hypothesis = ["The Eagle is a French coffee shop."];
        string[][] reference = [["The Eagle is a French coffee shop"]];
        Assert.Equal(100 * Math.Pow(0.5, 0.25), Bleu.Corpus(hypothesis, reference).Score, 9);
        // Whitespace keeps "shop." as one token: 7 vs 7, precisions 6/7 5/6 4/5 3/4 → (3/7)^¼ = 80.9106…
        Assert.Equal(100 * Math.Pow(3.0 / 7, 0.25), Bleu.Corpus(hypothesis, reference, BleuTokenizer.Whitespace).Score, 9);
    }

    [Fact]
    public void EmptyHypotheses_ScoreZero_AndMismatchedCountsThrow()
    {
        Assert.Equal(0, Whitespace([""], [["the cat sat on the mat"]]).Score);
        Assert.Throws<ArgumentException>(() => Whitespace(["a"], []));
        Assert.Throws<ArgumentException>(() => Whitespace(["a"], [[]]));
    }
}
